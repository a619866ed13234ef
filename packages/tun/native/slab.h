// Memory JavaScript owns and the addon reads or writes through raw pointers: slabs of packets,
// and the typed arrays of a read ring or a send table. Every pointer the I/O paths use comes out
// of a SlabRange, and only Pinned and SlabTable make one, after checking that it fits.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft {

// Bytes proven to lie inside live JS memory at the time they were resolved.
class SlabRange {
 public:
  SlabRange() = default;
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // [offset, offset + length) of this range; false when it does not fit.
  bool Slice(size_t offset, size_t length, SlabRange* out) const {
    if (offset > size_ || length > size_ - offset) return false;
    *out = SlabRange(data_ + offset, length);
    return true;
  }

 private:
  friend class Pinned;
  SlabRange(uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A typed array's bytes, kept alive by a reference to its ArrayBuffer. JS can detach (transfer)
// or shrink (resizable) an ArrayBuffer between any two calls, so Check() re-reads it before use.
class Pinned {
 public:
  // Pins `value`, which must be a typed array of `type` with at least `min_elements` elements
  // over a plain (not shared) ArrayBuffer. False, with a JS error pending, when it is not.
  bool Pin(Napi::Env env, Napi::Value value, napi_typedarray_type type, size_t min_elements, const char* what);
  // The same checks, for memory used only until the current call from JS returns (no JS runs
  // in between, so nothing can detach or shrink it): its bytes as a range, no reference kept.
  static bool Borrow(Napi::Env env, Napi::Value value, napi_typedarray_type type, size_t min_elements,
                     const char* what, SlabRange* out);
  // True when every pinned byte is still there; otherwise forgets the memory and returns false.
  bool Check(napi_env env);
  // The ArrayBuffer as it is now (false when it is gone), and whether this view still lies
  // inside it: Check() in two steps, so views of one buffer can share the first.
  bool ReadBuffer(napi_env env, uint8_t** base, size_t* length) const;
  bool Fits(const uint8_t* base, size_t length) const {
    return pinned_ && base == base_ && offset_ <= length && length_ <= length - offset_;
  }
  // Whether `other` views the same ArrayBuffer object.
  bool SameBuffer(napi_env env, const Pinned& other) const;
  void Reset();
  bool pinned() const { return pinned_; }
  size_t size() const { return length_; }
  // The whole view; meaningful only after Check() in the same call from JS or libuv.
  SlabRange range() const { return SlabRange(base_ + offset_, length_); }
  template <typename T>
  T* As() const {
    return reinterpret_cast<T*>(base_ + offset_);
  }
  bool SameMemory(const Pinned& other) const {
    return pinned_ && other.pinned_ && base_ + offset_ == other.base_ + other.offset_ && length_ == other.length_;
  }

 private:
  Napi::Reference<Napi::ArrayBuffer> buffer_;
  uint8_t* base_ = nullptr;
  size_t offset_ = 0;
  size_t length_ = 0;
  bool pinned_ = false;
};

// Views checked together (a read ring's or a send table's typed arrays): each distinct
// ArrayBuffer is read once per check, however many views it has.
class PinSet {
 public:
  static constexpr size_t kMaxPins = 8;
  // Groups the pinned ones of `pins` (at most kMaxPins) by ArrayBuffer; call again whenever
  // they move or change.
  void Build(napi_env env, std::initializer_list<Pinned*> pins);
  // True when every pin is still live; false means at least one is gone and none may be used.
  bool Check(napi_env env) const;

 private:
  std::vector<Pinned*> pins_;
  std::vector<size_t> first_;  // per pin: the first pin over the same ArrayBuffer
};

// The slabs a handle's send descriptors and read ring name by index (0..255).
class SlabTable {
 public:
  static constexpr uint32_t kSlabs = 256;
  // Pins a Uint8Array (a Buffer) for Put; false with a JS error pending when it is not one.
  static bool PinSlab(Napi::Env env, Napi::Value value, Pinned* out);
  // Makes `pin` slab `index` (< kSlabs), replacing what was there.
  void Put(uint32_t index, Pinned&& pin);
  const Pinned* Get(uint32_t index) const { return index < slabs_.size() && slabs_[index].pinned() ? &slabs_[index] : nullptr; }
  // Re-checks an attached slab: one detached or shrunk since is dropped, so descriptors that name
  // it resolve to nothing.
  bool Check(napi_env env, uint32_t index);
  // The one gate for (slab, offset, length) from JS: true only when it lies inside a live slab.
  bool Resolve(uint32_t index, int64_t offset, int64_t length, SlabRange* out) const {
    if (index >= slabs_.size()) return false;
    const Pinned& s = slabs_[index];
    if (!s.pinned() || offset < 0 || length < 0) return false;
    return s.range().Slice(static_cast<size_t>(offset), static_cast<size_t>(length), out);
  }
  // Resolve for one call from JS (after BeginCall): each slab a descriptor names is re-checked
  // the first time it is named in the call, so unnamed slabs cost nothing.
  void BeginCall() { epoch_++; }
  bool ResolveInCall(napi_env env, uint32_t index, int64_t offset, int64_t length, SlabRange* out) {
    if (index >= slabs_.size()) return false;
    if (checked_[index] != epoch_) {
      checked_[index] = epoch_;
      if (slabs_[index].pinned()) slabs_[index].Check(env);
    }
    return Resolve(index, offset, length, out);
  }
  void Clear();

 private:
  std::vector<Pinned> slabs_;
  std::vector<uint64_t> checked_;
  uint64_t epoch_ = 1;
};

}  // namespace weft
