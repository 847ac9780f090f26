// Splits a list's positions by the dtype of one of its lists: a multi-tensor launch is
// compiled for one element type, and a model may mix fp32 and bf16 parameters.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <vector>

namespace ssd_fast::cuda {

inline std::map<c10::ScalarType, std::vector<int32_t>> group_by_dtype(at::TensorList tensors) {
  std::map<c10::ScalarType, std::vector<int32_t>> groups;
  for (size_t i = 0; i < tensors.size(); ++i) groups[tensors[i].scalar_type()].push_back(static_cast<int32_t>(i));
  return groups;
}

inline std::vector<at::Tensor> pick(at::TensorList tensors, const std::vector<int32_t>& index) {
  std::vector<at::Tensor> out;
  out.reserve(index.size());
  for (int32_t i : index) out.push_back(tensors[i]);
  return out;
}

}  // namespace ssd_fast::cuda
