#pragma once
// The two CPU convolution algorithms behind kernels/conv2d.h (kernels/cpu only, and tests/bench).
//
// conv2d_*_cpu<T> (conv2d.h) picks one per call:
//   direct   float "same" convolutions with stride 1 (R == S odd, up to 7, pad (R-1)/2) on a CPU
//            with AVX2 and FMA: the ResNet 3x3 layers, about 94% of a ResNet-20 step's FLOPs.
//            kernels/cpu/conv2d_direct.cpp.
//   im2col   everything else (strided, unpadded, 1x1 with stride, double): im2col + one GEMM per
//            chunk of images, kernels/cpu/conv2d.cpp. It is also the readable reference the direct
//            path is tested against.
// Both have the semantics of conv2d.h; the backward-weight functions here leave dbias to the
// caller.
#include "kernels/conv2d.h"

namespace pb::kernels::cpu {

// True when the direct path takes shape s on this CPU (float only).
bool direct_conv2d_applies(const Conv2dShape& s);

void direct_conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias,
                           float* y);
void direct_conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx);
void direct_conv2d_backward_weight(const Conv2dShape& s, const float* x, const float* dy,
                                   float* dw);

template <typename T>
void im2col_conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);
template <typename T>
void im2col_conv2d_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx);
template <typename T>
void im2col_conv2d_backward_weight(const Conv2dShape& s, const T* x, const T* dy, T* dw);

}  // namespace pb::kernels::cpu
