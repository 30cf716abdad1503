// library.cpp: the one translation unit gpunet.cpu_kernels compiles (g++ -I this folder): the softmax-family
// row ops, the optimizers' updates and ReLU.
#include "rows.cpp"
#include "updates.cpp"
#include "activations.cpp"
