// TensorView lives in libquant (kernels and numerics take views without knowing file formats);
// formats/ code includes it from here.
#pragma once
#include "libquant/tensor_view.h"
