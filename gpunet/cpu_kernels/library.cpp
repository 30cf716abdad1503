// library.cpp: the one translation unit gpunet.cpu_kernels compiles (g++ -I this folder): the softmax-family
// row ops and the optimizers' updates.
#include "rows.cpp"
#include "updates.cpp"
