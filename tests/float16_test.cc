// Half and bfloat16 conversions (ir/float16.h) against an independent oracle: IEEE
// values computed in double from the bit fields, and round-to-nearest-even found
// by searching the sorted list of every finite half. The array forms (8 at a time
// with F16C) must give the scalar forms' bits, tails included.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "ir/float16.h"
#include "ir/tensor.h"

namespace ds {
namespace {

// The value of half `h` by the IEEE 754 binary16 definition.
double halfValue(uint16_t h) {
  const int sign = h >> 15 ? -1 : 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 31) return mant ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

// Round-to-nearest-even of a finite, non-negative `x` to a half (bits), by search.
uint16_t nearestHalf(double x) {
  static const std::vector<double> finite = [] {
    std::vector<double> v;
    for (uint32_t h = 0; h < 0x7c00; ++h) v.push_back(halfValue(static_cast<uint16_t>(h)));
    return v;
  }();
  if (x >= 65520.0) return 0x7c00;  // halfway past the largest finite half: to infinity
  auto hi = std::lower_bound(finite.begin(), finite.end(), x);
  if (hi == finite.end()) return 0x7bff;  // in (65504, 65520): down to the largest finite
  if (hi == finite.begin() || *hi == x) return static_cast<uint16_t>(hi - finite.begin());
  auto lo = hi - 1;
  double below = x - *lo, above = *hi - x;
  auto pick = below < above ? lo : above < below ? hi : ((lo - finite.begin()) % 2 == 0 ? lo : hi);
  return static_cast<uint16_t>(pick - finite.begin());
}

TEST(Float16, EveryHalfWidensToItsIeeeValue) {
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < all.size(); ++h) all[h] = static_cast<uint16_t>(h);
  std::vector<float> wide(all.size());
  halvesToFloats(all.data() + 1, wide.data() + 1, 65535);  // an odd length: a scalar tail
  wide[0] = halfToFloat(0);
  for (uint32_t h = 0; h < all.size(); ++h) {
    double want = halfValue(static_cast<uint16_t>(h));
    float scalar = halfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(scalar) && std::isnan(wide[h])) << h;
      EXPECT_EQ(std::signbit(scalar), (h >> 15) != 0) << h;
      continue;
    }
    EXPECT_EQ(static_cast<double>(scalar), want) << h;
    EXPECT_EQ(std::bit_cast<uint32_t>(wide[h]), std::bit_cast<uint32_t>(scalar)) << h;
  }
}

TEST(Float16, FloatsRoundToTheNearestHalfTiesToEven) {
  std::vector<float> xs;
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite half, its midpoints and neighbours
    double v = halfValue(static_cast<uint16_t>(h)), next = halfValue(static_cast<uint16_t>(h + 1));
    for (double x : {v, (v + next) / 2}) {
      float f = static_cast<float>(x);
      xs.insert(xs.end(), {f, std::nextafter(f, 0.0f), std::nextafter(f, INFINITY)});
    }
  }
  xs.insert(xs.end(), {65519.99f, 65520.0f, 1e10f, INFINITY, 1e-30f, 0.0f});
  const size_t n = xs.size();
  for (size_t i = 0; i < n; ++i) xs.push_back(-xs[i]);
  // NaNs (signalling ones too) in the first block of 8 and in the scalar tail.
  const std::vector<float> nans = {std::numeric_limits<float>::quiet_NaN(),
                                   -std::numeric_limits<float>::quiet_NaN(),
                                   std::bit_cast<float>(0x7f800001u),
                                   std::bit_cast<float>(0x7fffe000u),   // payloads that
                                   std::bit_cast<float>(0xffa00000u)};  // a half could keep
  xs.insert(xs.begin(), nans.begin(), nans.end());
  xs.insert(xs.end(), nans.begin(), nans.end());
  std::vector<uint16_t> bulk(xs.size());
  floatsToHalves(xs.data(), bulk.data(), static_cast<int64_t>(xs.size()));
  for (size_t i = 0; i < xs.size(); ++i) {
    const float x = xs[i];
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const uint16_t want = std::isnan(x)   ? static_cast<uint16_t>(sign | 0x7e00)
                          : std::isinf(x) ? static_cast<uint16_t>(sign | 0x7c00)
                                          : static_cast<uint16_t>(sign | nearestHalf(std::abs(x)));
    EXPECT_EQ(floatToHalf(x), want) << x;
    EXPECT_EQ(bulk[i], want) << x << " at " << i;
  }
}

TEST(Float16, Bfloat16RoundsToNearestEvenAndKeepsNaN) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie: to even
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie: to even
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);  // past the tie
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds up to inf
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(std::bit_cast<float>(0x7f800001u)))));
  for (uint32_t b = 0; b < 0x7f80; b += 7)
    EXPECT_EQ(floatToBf16(bf16ToFloat(static_cast<uint16_t>(b))), b);
}

// Tensor::castTo converts whole buffers between f32 and 16 bits (mixed precision's
// copies of a model): the scalar forms' bits, checked above against the oracle.
TEST(Float16, TensorCastsGiveTheScalarFormsBits) {
  std::vector<float> values = {
      0.0f,     -0.0f,    INFINITY, -INFINITY, std::nanf(""),
      65520.0f, 65504.0f, 1e-8f,    -6e-5f,    std::bit_cast<float>(0x3f808000u)};
  for (int i = 0; i < 1000; ++i) values.push_back(std::ldexp(1.0f + 0.001f * i, i % 40 - 20));
  Tensor f32(TensorType{DType::F32, {static_cast<int64_t>(values.size())}});
  std::copy(values.begin(), values.end(), f32.as<float>().data());
  const Tensor half = f32.castTo(DType::F16), bf16 = f32.castTo(DType::BF16);
  const Tensor half_back = half.castTo(DType::F32), bf16_back = bf16.castTo(DType::F32);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = floatToHalf(values[i]), b = floatToBf16(values[i]);
    EXPECT_EQ(half.as<uint16_t>()[i], h) << values[i];
    EXPECT_EQ(bf16.as<uint16_t>()[i], b) << values[i];
    EXPECT_EQ(std::bit_cast<uint32_t>(half_back.as<float>()[i]),
              std::bit_cast<uint32_t>(halfToFloat(h)));
    EXPECT_EQ(std::bit_cast<uint32_t>(bf16_back.as<float>()[i]),
              std::bit_cast<uint32_t>(bf16ToFloat(b)));
  }
}

}  // namespace
}  // namespace ds
