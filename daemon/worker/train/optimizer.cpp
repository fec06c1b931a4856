#include "daemon/worker/train/optimizer.h"

#include <algorithm>

namespace accum::train {

AdamW::AdamW(kernels::Backend* backend, const std::vector<model::ParamTensor>& tensors,
             std::vector<comm::Range> owned)
    : backend_(backend), owned_(std::move(owned)) {
  for (const comm::Range& range : owned_) {
    for (const model::ParamTensor& tensor : tensors) {
      const size_t begin = std::max(range.first, tensor.offset);
      const size_t end = std::min(range.second, tensor.offset + tensor.numel);
      if (begin >= end) continue;
      pieces_.push_back(
          {begin, end - begin, owned_count_ + (begin - range.first), tensor.weight_decay});
    }
    owned_count_ += range.second - range.first;
  }
  m_ = static_cast<float*>(backend_->alloc(std::max<size_t>(owned_count_, 1) * sizeof(float)));
  v_ = static_cast<float*>(backend_->alloc(std::max<size_t>(owned_count_, 1) * sizeof(float)));
}

AdamW::~AdamW() {
  backend_->release(m_);
  backend_->release(v_);
}

double AdamW::owned_sum_squares(const float* grads) const {
  double sum = 0;
  for (const comm::Range& range : owned_) {
    sum += backend_->sum_squares(grads + range.first, range.second - range.first);
  }
  return sum;
}

void AdamW::step(float* master, void* working, const float* grads, kernels::AdamWParams params,
                 float weight_decay) {
  params.weight_decay = weight_decay;
  backend_->adamw_update_segments(master, working, grads, m_, v_, pieces_, params);
}

void AdamW::download(std::vector<float>* m, std::vector<float>* v) const {
  m->resize(owned_count_);
  v->resize(owned_count_);
  backend_->download(m->data(), m_, owned_count_ * sizeof(float));
  backend_->download(v->data(), v_, owned_count_ * sizeof(float));
}

void AdamW::upload(const std::vector<float>& m, const std::vector<float>& v) {
  backend_->upload(m_, m.data(), owned_count_ * sizeof(float));
  backend_->upload(v_, v.data(), owned_count_ * sizeof(float));
}

}  // namespace accum::train
