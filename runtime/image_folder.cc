#include "runtime/image_folder.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#include "ir/error.h"
#include "kernels/dropout_rng.h"

namespace ds {
namespace fs = std::filesystem;
namespace {

// ImageNet's channel statistics (torchvision's references).
constexpr std::array<float, 3> kMean = {0.485f, 0.456f, 0.406f};
constexpr std::array<float, 3> kStd = {0.229f, 0.224f, 0.225f};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The extensions torchvision's ImageFolder takes (IMG_EXTENSIONS); of those, JPEG
// and PNG are decoded, the others are an error naming the file.
enum class ImageKind { Decoded, Undecoded, NotAnImage };
ImageKind kindOf(const std::string& extension) {
  static const std::array<std::string, 3> kDecoded = {".jpg", ".jpeg", ".png"};
  static const std::array<std::string, 6> kUndecoded = {".ppm", ".bmp",  ".pgm",
                                                        ".tif", ".tiff", ".webp"};
  if (std::find(kDecoded.begin(), kDecoded.end(), extension) != kDecoded.end())
    return ImageKind::Decoded;
  if (std::find(kUndecoded.begin(), kUndecoded.end(), extension) != kUndecoded.end())
    return ImageKind::Undecoded;
  return ImageKind::NotAnImage;
}

// libjpeg reports errors by calling error_exit, which must not return: it jumps
// back to decodeJpeg() with the message. Warnings are silent, as in PIL, except a
// file that ends early, which PIL refuses ("image file is truncated").
struct JpegError {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

void onJpegError(j_common_ptr info) {
  auto* error = reinterpret_cast<JpegError*>(info->err);
  info->err->format_message(info, error->message);
  std::longjmp(error->jump, 1);
}

void onJpegMessage(j_common_ptr info, int level) {
  if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF)
    reinterpret_cast<JpegError*>(info->err)->truncated = true;
}

// PIL's CMYK to RGB (Convert.c cmyk2rgb): each channel (255 - k) (1 - ink / 255),
// in its 8-bit arithmetic.
uint8_t cmykToRgb(uint8_t ink, uint8_t k) {
  const int nk = 255 - k, t = ink * nk + 128;
  return static_cast<uint8_t>(std::clamp(nk - (((t >> 8) + t) >> 8), 0, 255));
}

// Decodes JPEG `bytes` into `image` (RGB); returns why it cannot, else "". Grayscale
// is expanded and CMYK converted as PIL's convert("RGB") does (Adobe's files store
// CMYK inverted, which PIL undoes). The buffers are the caller's, so no C++ object
// is made between setjmp and the calls that may jump back to it.
std::string decodeJpeg(const std::vector<uint8_t>& bytes, RgbImage* image,
                       std::vector<uint8_t>* row) {
  jpeg_decompress_struct info;
  JpegError error;
  error.truncated = false;
  info.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = onJpegError;
  error.manager.emit_message = onJpegMessage;
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&info);
    return error.message;
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  const bool cmyk = info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK;
  const bool inverted = cmyk && info.saw_Adobe_marker;
  info.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  info.dct_method = JDCT_ISLOW;  // PIL's (and libjpeg's) default
  jpeg_start_decompress(&info);
  const size_t width = info.output_width, channels = cmyk ? 4 : 3;
  image->height = info.output_height;
  image->width = info.output_width;
  try {
    image->pixels.resize(static_cast<size_t>(info.output_height) * width * 3);
    row->resize(width * channels);
  } catch (...) {  // out of memory: let libjpeg free its own first
    jpeg_destroy_decompress(&info);
    throw;
  }
  while (info.output_scanline < info.output_height) {
    uint8_t* out = image->pixels.data() + info.output_scanline * width * 3;
    JSAMPROW in = cmyk ? row->data() : out;
    jpeg_read_scanlines(&info, &in, 1);
    if (!cmyk) continue;
    for (size_t x = 0; x < width; ++x) {
      uint8_t* p = row->data() + x * channels;
      if (inverted)
        for (size_t c = 0; c < 4; ++c) p[c] = static_cast<uint8_t>(255 - p[c]);
      for (size_t c = 0; c < 3; ++c) out[x * 3 + c] = cmykToRgb(p[c], p[3]);
    }
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return error.truncated ? "image file is truncated" : "";
}

// PNG through libpng's simplified API as 8-bit RGBA, the alpha dropped as PIL's
// convert("RGB") does; 16-bit PNGs are refused (libpng would re-encode them).
std::string decodePng(const std::vector<uint8_t>& bytes, RgbImage* image) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) return png.message;
  if ((png.format & PNG_FORMAT_FLAG_LINEAR) != 0) {
    png_image_free(&png);
    return "16-bit PNG images are not supported";
  }
  png.format = PNG_FORMAT_RGBA;
  std::vector<uint8_t> rgba(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, rgba.data(), 0, nullptr)) return png.message;
  image->height = png.height;
  image->width = png.width;
  image->pixels.resize(static_cast<size_t>(image->height * image->width) * 3);
  for (size_t p = 0; p < static_cast<size_t>(image->height * image->width); ++p)
    for (size_t c = 0; c < 3; ++c) image->pixels[p * 3 + c] = rgba[p * 4 + c];
  return "";
}

// PIL's resampling (libImaging/Resample.c): per output pixel, the source range and
// its bilinear weights, normalised, then in 8.22 fixed point.
constexpr int kPrecisionBits = 32 - 8 - 2;

struct Weights {
  int64_t taps = 0;              // weights per output pixel
  std::vector<int64_t> first;    // per output pixel: first source pixel
  std::vector<int64_t> count;    // per output pixel: source pixels used
  std::vector<int32_t> weights;  // output pixel x taps
};

Weights bilinearWeights(int64_t in_size, double in0, double in1, int64_t out_size) {
  const double scale = (in1 - in0) / static_cast<double>(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;  // the bilinear filter's support is 1
  Weights w;
  w.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  w.first.resize(static_cast<size_t>(out_size));
  w.count.resize(static_cast<size_t>(out_size));
  w.weights.assign(static_cast<size_t>(out_size * w.taps), 0);
  std::vector<double> k(static_cast<size_t>(w.taps));
  for (int64_t o = 0; o < out_size; ++o) {
    const double center = in0 + (static_cast<double>(o) + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in_size);
    const int64_t n = hi - lo;
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double x = std::fabs((static_cast<double>(i + lo) - center + 0.5) / filter_scale);
      k[static_cast<size_t>(i)] = x < 1.0 ? 1.0 - x : 0.0;
      total += k[static_cast<size_t>(i)];
    }
    for (int64_t i = 0; i < n; ++i) {
      const double v = total != 0.0 ? k[static_cast<size_t>(i)] / total : k[static_cast<size_t>(i)];
      w.weights[static_cast<size_t>(o * w.taps + i)] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    w.first[static_cast<size_t>(o)] = lo;
    w.count[static_cast<size_t>(o)] = n;
  }
  return w;
}

uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// A uniform double in [0, 1) from the stream `key` at counter `n`.
double uniform(uint64_t key, uint64_t n) {
  return static_cast<double>(mixIn(key, n) >> 11) * 0x1.0p-53;
}

}  // namespace

RgbImage readImage(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DS_CHECK(in.good(), path, ": cannot open image");
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                   std::istreambuf_iterator<char>());
  // By content, as PIL opens them: ImageNet has a PNG named .JPEG.
  static constexpr uint8_t kPng[] = {0x89, 'P', 'N', 'G'};
  const bool png = bytes.size() >= 4 && std::equal(kPng, kPng + 4, bytes.begin());
  RgbImage image;
  std::string failure;
  if (png) {
    failure = decodePng(bytes, &image);
  } else {
    std::vector<uint8_t> row;
    failure = decodeJpeg(bytes, &image, &row);
  }
  DS_CHECK(failure.empty(), path, ": not an image dsrun can decode (", failure, ")");
  return image;
}

RgbImage resizeBilinear(const RgbImage& image, const CropBox& box, int64_t height, int64_t width) {
  DS_CHECK(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0 &&
               box.top + box.height <= image.height && box.left + box.width <= image.width,
           "crop box outside the image");
  // PIL crops, then resizes the whole crop: horizontal pass first, on the rows
  // the vertical pass reads, each pass rounding to 8 bits.
  const Weights across = bilinearWeights(box.width, 0, static_cast<double>(box.width), width);
  const Weights down = bilinearWeights(box.height, 0, static_cast<double>(box.height), height);
  const int64_t row_first = down.first.front();
  const int64_t rows = down.first.back() + down.count.back() - row_first;
  std::vector<uint8_t> temp(static_cast<size_t>(rows * width * 3));
  for (int64_t y = 0; y < rows; ++y) {
    const uint8_t* src =
        image.pixels.data() + ((box.top + row_first + y) * image.width + box.left) * 3;
    for (int64_t x = 0; x < width; ++x) {
      const int32_t* k = &across.weights[static_cast<size_t>(x * across.taps)];
      const int64_t first = across.first[static_cast<size_t>(x)];
      for (int c = 0; c < 3; ++c) {
        int32_t sum = 1 << (kPrecisionBits - 1);
        for (int64_t i = 0; i < across.count[static_cast<size_t>(x)]; ++i)
          sum += src[(first + i) * 3 + c] * k[i];
        temp[static_cast<size_t>((y * width + x) * 3 + c)] = clip8(sum);
      }
    }
  }
  RgbImage out{height, width, std::vector<uint8_t>(static_cast<size_t>(height * width * 3))};
  for (int64_t y = 0; y < height; ++y) {
    const int32_t* k = &down.weights[static_cast<size_t>(y * down.taps)];
    const int64_t first = down.first[static_cast<size_t>(y)] - row_first;
    for (int64_t x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) {
        int32_t sum = 1 << (kPrecisionBits - 1);
        for (int64_t i = 0; i < down.count[static_cast<size_t>(y)]; ++i)
          sum += temp[static_cast<size_t>(((first + i) * width + x) * 3 + c)] * k[i];
        out.pixels[static_cast<size_t>((y * width + x) * 3 + c)] = clip8(sum);
      }
  }
  return out;
}

CropBox randomResizedCrop(int64_t height, int64_t width, uint64_t key) {
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  uint64_t n = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (0.08 + (1.0 - 0.08) * uniform(key, n++));
    const double ratio = std::exp(log_lo + (log_hi - log_lo) * uniform(key, n++));
    const auto w = static_cast<int64_t>(std::round(std::sqrt(target * ratio)));
    const auto h = static_cast<int64_t>(std::round(std::sqrt(target / ratio)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const auto top =
          static_cast<int64_t>(uniform(key, n++) * static_cast<double>(height - h + 1));
      const auto left =
          static_cast<int64_t>(uniform(key, n++) * static_cast<double>(width - w + 1));
      return {top, left, h, w};
    }
  }
  // torchvision's fallback: the central crop within the ratio range.
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < 3.0 / 4.0)
    h = static_cast<int64_t>(std::round(static_cast<double>(w) / (3.0 / 4.0)));
  else if (in_ratio > 4.0 / 3.0)
    w = static_cast<int64_t>(std::round(static_cast<double>(h) * (4.0 / 3.0)));
  return {(height - h) / 2, (width - w) / 2, h, w};
}

namespace {

// The images of one class as torchvision lists them: sorted(os.walk(class_dir,
// followlinks=True)) orders directories by path, and each one's files by name.
std::vector<std::string> classImages(const fs::path& class_dir, const std::string& source) {
  std::map<std::string, std::vector<std::string>> by_directory;
  for (const fs::directory_entry& entry : fs::recursive_directory_iterator(
           class_dir, fs::directory_options::follow_directory_symlink)) {
    if (!entry.is_regular_file()) continue;
    const std::string extension = lower(entry.path().extension().string());
    const ImageKind kind = kindOf(extension);
    DS_CHECK(kind != ImageKind::Undecoded, entry.path().string(), ": ", source,
             " decodes JPEG and PNG images only");
    if (kind == ImageKind::Decoded)
      by_directory[entry.path().parent_path().string()].push_back(entry.path().filename().string());
  }
  std::vector<std::string> files;
  for (auto& [directory, names] : by_directory) {
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) files.push_back((fs::path(directory) / name).string());
  }
  return files;
}

}  // namespace

ImageFolder::ImageFolder(const std::string& dir, ImageFolderOptions options) : options_(options) {
  std::error_code error;
  DS_CHECK(fs::is_directory(dir, error), name(), ":", dir, ": not a directory");
  try {
    for (const fs::directory_entry& entry : fs::directory_iterator(dir))
      if (entry.is_directory()) class_names_.push_back(entry.path().filename().string());
    std::sort(class_names_.begin(), class_names_.end());
    DS_CHECK(!class_names_.empty(), name(), ":", dir,
             ": no class directories (expected DIR/<class>/<image>.jpg)");
    for (size_t label = 0; label < class_names_.size(); ++label) {
      std::vector<std::string> files = classImages(fs::path(dir) / class_names_[label], name());
      DS_CHECK(!files.empty(), name(), ":", dir, ": class '", class_names_[label],
               "' has no .jpg, .jpeg or .png images");
      for (std::string& f : files) samples_.push_back({std::move(f), static_cast<int64_t>(label)});
    }
  } catch (const fs::filesystem_error& e) {  // unreadable directories, symlink loops
    throw makeError(name(), ":", dir, ": ", e.what());
  }
}

int64_t ImageFolder::sampleAt(int64_t position) const {
  const int64_t epoch = position / size();
  if (epoch != cached_epoch_) {  // Fisher-Yates with the epoch's own stream
    order_.resize(static_cast<size_t>(size()));
    for (int64_t i = 0; i < size(); ++i) order_[static_cast<size_t>(i)] = i;
    const uint64_t key = mixIn(options_.seed, static_cast<uint64_t>(epoch));
    for (int64_t i = size() - 1; i > 0; --i) {
      const auto j =
          static_cast<int64_t>(mixIn(key, static_cast<uint64_t>(i)) % static_cast<uint64_t>(i + 1));
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
    }
    cached_epoch_ = epoch;
  }
  return order_[static_cast<size_t>(position % size())];
}

const std::string& ImageFolder::pathAt(int64_t position) const {
  return samples_[static_cast<size_t>(sampleAt(position))].path;
}

CropBox ImageFolder::cropAt(int64_t position, int64_t height, int64_t width, bool* flip) const {
  *flip = false;
  if (!options_.augment) return {0, 0, height, width};
  const uint64_t key = mixIn(options_.seed ^ 0x5bd1e995ull, static_cast<uint64_t>(position));
  *flip = (mixIn(key, ~uint64_t{0}) & 1) != 0;
  return randomResizedCrop(height, width, key);
}

void ImageFolder::batch(int64_t first, const TensorType& images_type, Tensor* images,
                        Tensor* labels) const {
  checkImageInput("(images)", images_type);
  const int64_t count = images_type.shape[0], height = images_type.shape[2],
                width = images_type.shape[3];
  *images = Tensor(images_type);
  *labels = Tensor({DType::I64, {count}});
  std::vector<const Sample*> chosen(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    chosen[static_cast<size_t>(i)] = &samples_[static_cast<size_t>(sampleAt(first + i))];
    labels->as<int64_t>()[static_cast<size_t>(i)] = chosen[static_cast<size_t>(i)]->label;
  }
  std::vector<std::string> failures(static_cast<size_t>(count));
  float* out = images->as<float>().data();
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < count; ++i) {
    try {
      const RgbImage image = readImage(chosen[static_cast<size_t>(i)]->path);
      bool flip = false;
      const CropBox box = cropAt(first + i, image.height, image.width, &flip);
      const RgbImage resized = resizeBilinear(image, box, height, width);
      float* sample = out + i * 3 * height * width;
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < height; ++y)
          for (int64_t x = 0; x < width; ++x) {
            const int64_t sx = flip ? width - 1 - x : x;
            const float v = resized.pixels[static_cast<size_t>((y * width + sx) * 3 + c)] / 255.0f;
            sample[(c * height + y) * width + x] =
                (v - kMean[static_cast<size_t>(c)]) / kStd[static_cast<size_t>(c)];
          }
    } catch (const std::exception& e) {
      failures[static_cast<size_t>(i)] = e.what();
    }
  }
  for (const std::string& failure : failures) DS_CHECK(failure.empty(), failure);
}

}  // namespace ds
