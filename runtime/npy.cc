#include "runtime/npy.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

#include "ir/error.h"

namespace ds {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

const char* descrOf(DType t) {
  switch (t) {
    case DType::F32:
      return "<f4";
    case DType::F64:
      return "<f8";
    case DType::F16:
      return "<f2";
    case DType::I64:
      return "<i8";
    case DType::I32:
      return "<i4";
    case DType::I8:
      return "|i1";
    case DType::U8:
      return "|u1";
    case DType::Bool:
      return "|b1";
    case DType::BF16:
      return nullptr;
  }
  return nullptr;
}

DType dtypeOfDescr(const std::string& d, const std::string& path) {
  for (DType t : {DType::F32, DType::F64, DType::F16, DType::I64, DType::I32, DType::I8, DType::U8,
                  DType::Bool}) {
    std::string mine = descrOf(t);
    // '|' and '<' are equivalent for one-byte types; '=' means native (little) endian.
    if (d == mine || (d.size() == 3 && mine.substr(1) == d.substr(1) &&
                      (d[0] == '=' || d[0] == '|' || d[0] == '<')))
      return t;
  }
  throw makeError(path, ": NumPy dtype '", d, "' is not supported");
}

std::string field(const std::string& header, const std::string& key, const std::string& path) {
  std::smatch m;
  std::regex re("'" + key + "'\\s*:\\s*('[^']*'|True|False|\\([^)]*\\))");
  DS_CHECK(std::regex_search(header, m, re), path, ": .npy header lacks '", key, "'");
  return m[1].str();
}

}  // namespace

Tensor readNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DS_CHECK(in.good(), path, ": cannot open file");
  char magic[6];
  uint8_t version[2];
  DS_CHECK(in.read(magic, 6) && std::memcmp(magic, kMagic, 6) == 0 &&
               in.read(reinterpret_cast<char*>(version), 2),
           path, ": not a NumPy .npy file");
  uint32_t header_len = 0;
  if (version[0] == 1) {
    uint16_t len16 = 0;
    in.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  DS_CHECK(in.good() && header_len < (1u << 20), path, ": damaged .npy header");
  std::string header(header_len, '\0');
  in.read(header.data(), header_len);
  std::string descr = field(header, "descr", path);
  DType dtype = dtypeOfDescr(descr.substr(1, descr.size() - 2), path);
  DS_CHECK(field(header, "fortran_order", path) == "False", path,
           ": Fortran-order arrays are not supported (save with np.ascontiguousarray)");
  std::string dims = field(header, "shape", path);
  Shape shape;
  const std::regex number("\\d+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), number), end; it != end; ++it)
    shape.push_back(std::stoll(it->str()));
  TensorType type{dtype, shape};
  std::vector<uint8_t> bytes(type.bytes());
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  DS_CHECK(in.gcount() == static_cast<std::streamsize>(bytes.size()), path,
           ": truncated: ", type.toString(), " needs ", bytes.size(), " bytes of data");
  return Tensor(type, std::move(bytes));
}

void writeNpy(const std::string& path, const Tensor& t) {
  const char* descr = descrOf(t.dtype());
  DS_CHECK(descr != nullptr, path, ": ", dtypeName(t.dtype()), " has no NumPy dtype");
  std::string dims;  // a Python tuple: "()", "(2,)", "(2, 3)"
  for (size_t i = 0; i < t.shape().size(); ++i)
    dims += (i ? ", " : "") + std::to_string(t.shape()[i]);
  if (t.shape().size() == 1) dims += ",";
  std::string header =
      "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad with spaces so that magic + version + length + header is a multiple of 64.
  size_t total = 6 + 2 + 2 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    DS_CHECK(out.good(), path, ": cannot write file");
    out.write(kMagic, 6);
    out.put(1);
    out.put(0);
    auto len = static_cast<uint16_t>(header.size());
    out.write(reinterpret_cast<const char*>(&len), 2);
    out << header;
    out.write(reinterpret_cast<const char*>(t.raw()), static_cast<std::streamsize>(t.bytes()));
    DS_CHECK(out.good(), path, ": write failed");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace ds
