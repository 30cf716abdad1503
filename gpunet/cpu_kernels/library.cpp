// library.cpp: the one translation unit gpunet.cpu_kernels compiles (g++ -I this folder): the softmax-family
// row ops and the fused cross-entropy, the optimizers' updates, and the activations.
#include "rows.cpp"
#include "updates.cpp"
#include "activations.cpp"
