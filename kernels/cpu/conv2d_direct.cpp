// Direct convolution on the CPU for stride-1 "same" convolutions (R == S odd <= 7, pad (R-1)/2),
// float, AVX2 + FMA. No im2col: each tap of the filter reads the input in place.
//
// The frame. A chunk of B images is copied, one plane per channel, into a zero-padded layout in
// which every filter tap is a constant offset:
//   row stride L = W + pw (pw zero columns after each row; the zeros left of column 0 are the
//   previous row's), ph zero rows before each image (shared with the one before), ph after the last
//   pixel row of the chunk, and pixel (b, h, w) at frame row ph + b*(H+ph) + h, column w.
// For output position j = row*L + col the input under tap (r,s) is frame[j + (r-ph)*L + (s-pw)],
// whether it is a pixel or padding. The output uses the same positions: it is computed for every j
// from the first pixel row to the last (the padding positions in between come out as garbage
// values that are never copied back), in tiles of 24 consecutive positions.
//
//   forward          y[k](j)   = sum_c sum_t w[k][c][t] * x[c](j + off(t))
//   backward-data    dx[c](j)  = sum_k sum_t w[k][c][RS-1-t] * dy[k](j + off(t))
//                    (the same loop with the filter flipped and C and K swapped: with pad (R-1)/2,
//                     off(RS-1-t) = -off(t))
//   backward-weight  dw[k][c][t] = sum_j dy[k](j) * x[c](j + off(t))
//                    (dy framed too, so its padding positions are exact zeros and add nothing)
//
// Micro-kernels. Forward and backward-data: 4 output channels x 24 positions in 12 AVX registers;
// per (input channel, tap), 3 unaligned loads of the input, 4 broadcast weights, 12 FMAs (weights
// packed [channel tile][input channel][tap][4]). Backward-weight: 4 output channels x 3 taps of one
// input channel, reducing over positions 8 at a time in 12 registers, lanes summed at the end.
//
// Work split. Images go in chunks of B (framed input + output within ~256 KB, the L2 of one core;
// at least 8 chunks when N >= 8), chunks over the kernel pool. B depends on the shape alone, and
// backward-weight sums one partial dw per chunk in chunk order after the parallel part, so every
// result is bitwise the same for any thread count.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/conv2d_algos.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/parallel.h"

namespace pb::kernels::cpu {
namespace {

constexpr int64_t kTile = 24;  // output positions per micro-tile: 3 AVX vectors
constexpr int64_t kMr = 4;     // output channels per micro-tile
constexpr int64_t kLead = 8;   // zeros before a plane's frame origin (>= pw; keeps 32-byte steps)
constexpr int64_t kChunkBytes = 256 * 1024;

int64_t round_up(int64_t v, int64_t m) {
  return (v + m - 1) / m * m;
}

// Geometry of a framed chunk of B images of H x W (see the header comment).
struct Frame {
  int64_t H, W, ph, pw, L, B;
  int64_t first;  // position of the first pixel row's column 0 (= ph*L)
  int64_t count;  // positions computed, from `first`: a multiple of kTile
  int64_t plane;  // floats per channel plane, both guards included
  int64_t RS;
  int64_t off[49];  // offset of tap t = r*S + s: (r-ph)*L + (s-pw)

  Frame(const Conv2dShape& s, int64_t images)
      : H(s.H), W(s.W), ph(s.pad_h), pw(s.pad_w), B(images) {
    L = W + pw;
    first = ph * L;
    count = round_up((B * (H + ph) - ph) * L, kTile);
    // The last read is position first + count - 1 plus the largest tap offset ph*L + pw.
    plane = round_up(kLead + first + count + ph * L + pw, 8);
    RS = s.R * s.S;
    for (int64_t r = 0; r < s.R; ++r) {
      for (int64_t t = 0; t < s.S; ++t) off[r * s.S + t] = (r - ph) * L + (t - pw);
    }
  }
  // Frame row of image b's pixel row h.
  int64_t row(int64_t b, int64_t h) const { return ph + b * (H + ph) + h; }
};

// Images per chunk: framed input and output planes of one image within kChunkBytes, and at least 8
// chunks when the batch allows; from the shape only (see the header comment).
int64_t chunk_images(const Conv2dShape& s) {
  const int64_t per_image =
      (s.C + round_up(s.K, kMr)) * (s.H + s.pad_h) * (s.W + s.pad_w) * int64_t(sizeof(float));
  const int64_t by_cache = std::max<int64_t>(1, kChunkBytes / std::max<int64_t>(per_image, 1));
  const int64_t by_count = std::max<int64_t>(1, (s.N + 7) / 8);
  return std::min(by_cache, by_count);
}

// Images [0, images) of src (images, channels, H, W) -> planes of buf; channel planes beyond
// `channels` up to `planes` (channel-tile padding) are zero.
void frame_images(const Frame& f, int64_t channels, int64_t planes, const float* src,
                  int64_t images, float* buf) {
  std::memset(buf, 0, sizeof(float) * static_cast<size_t>(planes * f.plane));
  for (int64_t ch = 0; ch < channels; ++ch) {
    float* origin = buf + ch * f.plane + kLead;
    for (int64_t b = 0; b < images; ++b) {
      const float* img = src + (b * channels + ch) * f.H * f.W;
      for (int64_t h = 0; h < f.H; ++h) {
        std::memcpy(origin + f.row(b, h) * f.L, img + h * f.W, sizeof(float) * size_t(f.W));
      }
    }
  }
}

// Computed planes (channel ch at out + ch*count, position 0 = f.first) -> dst (images, channels,
// H, W), plus bias[ch] when given.
void unframe_images(const Frame& f, int64_t channels, const float* out, int64_t images,
                    const float* bias, float* dst) {
  for (int64_t b = 0; b < images; ++b) {
    for (int64_t ch = 0; ch < channels; ++ch) {
      const float* plane = out + ch * f.count;
      float* img = dst + (b * channels + ch) * f.H * f.W;
      const float add = bias != nullptr ? bias[ch] : 0.0f;
      for (int64_t h = 0; h < f.H; ++h) {
        const float* src = plane + (f.row(b, h) - f.ph) * f.L;
        float* d = img + h * f.W;
        for (int64_t w = 0; w < f.W; ++w) d[w] = src[w] + add;
      }
    }
  }
}

// out rows m = 0..3 (row stride ostride), positions [0, 24):
//   out[m][i] = sum over input channels c < C and taps t < RS of wp[(c*RS + t)*4 + m] *
//   in[c*plane + off[t] + i]
// summed in blocks of kChannelBlock input channels: each block's sum is formed in registers and
// added to the running total, so rounding grows with RS*kChannelBlock + C/kChannelBlock terms
// rather than RS*C (a 64-channel 3x3 backward-data would otherwise chain 576 additions per output,
// where im2col + col2im chains at most K + RS).
constexpr int64_t kChannelBlock = 4;

template <int RS>
__attribute__((target("avx2,fma"))) void tile_4x24(const float* in, int64_t plane, int64_t C,
                                                   const int64_t* off, const float* wp, float* out,
                                                   int64_t ostride) {
  __m256 t00 = _mm256_setzero_ps(), t01 = t00, t02 = t00, t10 = t00, t11 = t00, t12 = t00;
  __m256 t20 = t00, t21 = t00, t22 = t00, t30 = t00, t31 = t00, t32 = t00;
  int64_t o[RS];
  for (int t = 0; t < RS; ++t) o[t] = off[t];
  for (int64_t c0 = 0; c0 < C; c0 += kChannelBlock) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    const int64_t c1 = std::min(C, c0 + kChannelBlock);
    for (int64_t c = c0; c < c1; ++c, in += plane) {
      for (int t = 0; t < RS; ++t, wp += kMr) {
        const float* p = in + o[t];
        const __m256 x0 = _mm256_loadu_ps(p), x1 = _mm256_loadu_ps(p + 8),
                     x2 = _mm256_loadu_ps(p + 16);
        __m256 w = _mm256_broadcast_ss(wp);
        a00 = _mm256_fmadd_ps(w, x0, a00);
        a01 = _mm256_fmadd_ps(w, x1, a01);
        a02 = _mm256_fmadd_ps(w, x2, a02);
        w = _mm256_broadcast_ss(wp + 1);
        a10 = _mm256_fmadd_ps(w, x0, a10);
        a11 = _mm256_fmadd_ps(w, x1, a11);
        a12 = _mm256_fmadd_ps(w, x2, a12);
        w = _mm256_broadcast_ss(wp + 2);
        a20 = _mm256_fmadd_ps(w, x0, a20);
        a21 = _mm256_fmadd_ps(w, x1, a21);
        a22 = _mm256_fmadd_ps(w, x2, a22);
        w = _mm256_broadcast_ss(wp + 3);
        a30 = _mm256_fmadd_ps(w, x0, a30);
        a31 = _mm256_fmadd_ps(w, x1, a31);
        a32 = _mm256_fmadd_ps(w, x2, a32);
      }
    }
    t00 = _mm256_add_ps(t00, a00);
    t01 = _mm256_add_ps(t01, a01);
    t02 = _mm256_add_ps(t02, a02);
    t10 = _mm256_add_ps(t10, a10);
    t11 = _mm256_add_ps(t11, a11);
    t12 = _mm256_add_ps(t12, a12);
    t20 = _mm256_add_ps(t20, a20);
    t21 = _mm256_add_ps(t21, a21);
    t22 = _mm256_add_ps(t22, a22);
    t30 = _mm256_add_ps(t30, a30);
    t31 = _mm256_add_ps(t31, a31);
    t32 = _mm256_add_ps(t32, a32);
  }
  _mm256_storeu_ps(out, t00);
  _mm256_storeu_ps(out + 8, t01);
  _mm256_storeu_ps(out + 16, t02);
  out += ostride;
  _mm256_storeu_ps(out, t10);
  _mm256_storeu_ps(out + 8, t11);
  _mm256_storeu_ps(out + 16, t12);
  out += ostride;
  _mm256_storeu_ps(out, t20);
  _mm256_storeu_ps(out + 8, t21);
  _mm256_storeu_ps(out + 16, t22);
  out += ostride;
  _mm256_storeu_ps(out, t30);
  _mm256_storeu_ps(out + 8, t31);
  _mm256_storeu_ps(out + 16, t32);
}

using TileFn = void (*)(const float*, int64_t, int64_t, const int64_t*, const float*, float*,
                        int64_t);

TileFn tile_for(int64_t RS) {
  switch (RS) {
    case 1:
      return &tile_4x24<1>;
    case 9:
      return &tile_4x24<9>;
    case 25:
      return &tile_4x24<25>;
    default:
      return &tile_4x24<49>;
  }
}

// The shared loop of forward and backward-data: `in` (B images of Cin channels) convolved with the
// packed filter wp (Cout4/4 tiles of [Cin][RS][4]) into `out` (B images of Cout channels), plus
// bias. Cout4 = Cout rounded up to kMr.
void same_conv(const Frame& f0, int64_t N, int64_t Cin, int64_t Cout, const float* in,
               const float* wp, const float* bias, float* out) {
  const int64_t B = f0.B, chunks = (N + B - 1) / B, Cout4 = round_up(Cout, kMr);
  const TileFn tile = tile_for(f0.RS);
  parallel_for(chunks, [&](int64_t begin, int64_t end) {
    const Frame& f = f0;
    float* framed = workspace<float>(0, Cin * f.plane);
    float* result = workspace<float>(1, Cout4 * f.count);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t n0 = chunk * B, images = std::min(B, N - n0);
      frame_images(f, Cin, Cin, in + n0 * Cin * f.H * f.W, images, framed);
      const float* origin = framed + kLead + f.first;
      for (int64_t kt = 0; kt < Cout4 / kMr; ++kt) {
        const float* w_tile = wp + kt * Cin * f.RS * kMr;
        float* r = result + kt * kMr * f.count;
        for (int64_t i = 0; i < f.count; i += kTile) {
          tile(origin + i, f.plane, Cin, f.off, w_tile, r + i, f.count);
        }
      }
      unframe_images(f, Cout, result, images, bias, out + n0 * Cout * f.H * f.W);
    }
  });
}

// dw partial of one chunk, for output channels [4kt, 4kt+4) and input channel c, taps [t0, t0+G):
// acc[m][g] = sum over positions i of dy[4kt+m](i) * x[c](i + off[t0+g]).
template <int G>
__attribute__((target("avx2,fma"))) void dw_tile(const float* dy, int64_t dy_plane, const float* x,
                                                 const int64_t* off, int64_t count,
                                                 float* acc_out /* [4][G] */) {
  __m256 acc[kMr][G];
  for (auto& row : acc) {
    for (auto& a : row) a = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < count; i += 8) {
    const __m256 d0 = _mm256_loadu_ps(dy + i), d1 = _mm256_loadu_ps(dy + dy_plane + i),
                 d2 = _mm256_loadu_ps(dy + 2 * dy_plane + i),
                 d3 = _mm256_loadu_ps(dy + 3 * dy_plane + i);
    for (int g = 0; g < G; ++g) {
      const __m256 xv = _mm256_loadu_ps(x + off[g] + i);
      acc[0][g] = _mm256_fmadd_ps(d0, xv, acc[0][g]);
      acc[1][g] = _mm256_fmadd_ps(d1, xv, acc[1][g]);
      acc[2][g] = _mm256_fmadd_ps(d2, xv, acc[2][g]);
      acc[3][g] = _mm256_fmadd_ps(d3, xv, acc[3][g]);
    }
  }
  // Lanes summed in a fixed order: (0+4, 1+5, 2+6, 3+7), then pairwise.
  for (int m = 0; m < kMr; ++m) {
    for (int g = 0; g < G; ++g) {
      const __m128 lo = _mm256_castps256_ps128(acc[m][g]), hi = _mm256_extractf128_ps(acc[m][g], 1);
      __m128 v = _mm_add_ps(lo, hi);
      v = _mm_add_ps(v, _mm_movehl_ps(v, v));
      v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
      acc_out[m * G + g] = _mm_cvtss_f32(v);
    }
  }
}

// The filter of same_conv, packed for tile_4x24 in the calling thread's workspace slot 2:
// wp[ot][i][t][m] = weight(4*ot + m, i, t) for Cout output and Cin input channels and RS taps,
// zero for output channels past Cout (the last tile's padding).
template <typename Weight>
const float* pack_filter(int64_t Cout, int64_t Cin, int64_t RS, Weight weight) {
  const int64_t Cout4 = round_up(Cout, kMr);
  float* wp = workspace<float>(2, Cout4 * Cin * RS);
  for (int64_t o = 0; o < Cout4; ++o) {
    for (int64_t i = 0; i < Cin; ++i) {
      for (int64_t t = 0; t < RS; ++t) {
        wp[((o / kMr * Cin + i) * RS + t) * kMr + o % kMr] = o < Cout ? weight(o, i, t) : 0.0f;
      }
    }
  }
  return wp;
}

}  // namespace

bool direct_conv2d_applies(const Conv2dShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && s.R == s.S && s.R % 2 == 1 && s.R <= 7 &&
         s.pad_h == (s.R - 1) / 2 && s.pad_w == (s.S - 1) / 2 && s.N > 0 &&
         avx2_fma_kernels_enabled();
}

void direct_conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias,
                           float* y) {
  const Frame f(s, chunk_images(s));
  // Output channel o = k reads input channel i = c at tap t.
  const float* wp = pack_filter(
      s.K, s.C, f.RS, [&](int64_t k, int64_t c, int64_t t) { return w[(k * s.C + c) * f.RS + t]; });
  same_conv(f, s.N, s.C, s.K, x, wp, bias, y);
}

void direct_conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  const Frame f(s, chunk_images(s));
  // Output channel o = c reads input channel i = k at tap t through the flipped filter.
  const float* wp = pack_filter(s.C, s.K, f.RS, [&](int64_t c, int64_t k, int64_t t) {
    return w[(k * s.C + c) * f.RS + (f.RS - 1 - t)];
  });
  same_conv(f, s.N, s.K, s.C, dy, wp, nullptr, dx);
}

void direct_conv2d_backward_weight(const Conv2dShape& s, const float* x, const float* dy,
                                   float* dw) {
  const Frame f0(s, chunk_images(s));
  const int64_t B = f0.B, chunks = (s.N + B - 1) / B, RS = f0.RS, K4 = round_up(s.K, kMr);
  const int64_t dw_size = s.K * s.C * RS;
  float* partials = workspace<float>(2, chunks * dw_size);  // one dw per chunk
  parallel_for(chunks, [&](int64_t begin, int64_t end) {
    const Frame& f = f0;
    float* xf = workspace<float>(0, s.C * f.plane);
    float* dyf = workspace<float>(1, K4 * f.plane);
    float acc[kMr * 3];
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t n0 = chunk * B, images = std::min(B, s.N - n0);
      frame_images(f, s.C, s.C, x + n0 * s.C * s.H * s.W, images, xf);
      frame_images(f, s.K, K4, dy + n0 * s.K * s.H * s.W, images, dyf);
      float* part = partials + chunk * dw_size;
      for (int64_t kt = 0; kt < K4 / kMr; ++kt) {
        const float* d = dyf + kt * kMr * f.plane + kLead + f.first;
        for (int64_t c = 0; c < s.C; ++c) {
          const float* xc = xf + c * f.plane + kLead + f.first;
          for (int64_t t0 = 0; t0 < RS; t0 += 3) {
            const int64_t G = std::min<int64_t>(3, RS - t0);
            if (G == 3) {
              dw_tile<3>(d, f.plane, xc, f.off + t0, f.count, acc);
            } else if (G == 2) {
              dw_tile<2>(d, f.plane, xc, f.off + t0, f.count, acc);
            } else {
              dw_tile<1>(d, f.plane, xc, f.off + t0, f.count, acc);
            }
            for (int64_t m = 0; m < kMr && kt * kMr + m < s.K; ++m) {
              for (int64_t g = 0; g < G; ++g) {
                part[((kt * kMr + m) * s.C + c) * RS + t0 + g] = acc[m * G + g];
              }
            }
          }
        }
      }
    }
  });
  // dw = the chunks' partial sums added in chunk order, split over dw's elements.
  parallel_for(dw_size, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      float sum = partials[e];
      for (int64_t chunk = 1; chunk < chunks; ++chunk) sum += partials[chunk * dw_size + e];
      dw[e] = sum;
    }
  });
}

}  // namespace pb::kernels::cpu
