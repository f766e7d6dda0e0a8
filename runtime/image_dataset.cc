#include "runtime/image_dataset.h"

#include "ir/error.h"

namespace ds {

void ImageDataset::checkImageInput(const std::string& feed, const TensorType& type) const {
  DS_CHECK(type.dtype == DType::F32 && type.rank() == 4 && type.shape[1] == 3 &&
               type.shape[2] > 0 && type.shape[3] > 0,
           name(), ": input '", feed, "' must be f32[batch,3,height,width], is ", type.toString());
}

}  // namespace ds
