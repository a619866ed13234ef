#include "handle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netlink.h>
#include <linux/udp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif

namespace weft {

namespace {

constexpr size_t kRxControl = CMSG_SPACE(sizeof(int));
constexpr size_t kTxControl = CMSG_SPACE(sizeof(uint16_t));
constexpr size_t kNetlinkBuffer = 1 << 16;

template <typename T>
T* TypedData(Napi::Value value, Napi::ObjectReference* keep, size_t min_elements, const char* what) {
  if (value.IsUndefined() || value.IsNull()) return nullptr;
  Napi::Env env = value.Env();
  if (!value.IsTypedArray()) {
    Napi::TypeError::New(env, std::string(what) + " must be a typed array").ThrowAsJavaScriptException();
    return nullptr;
  }
  auto array = value.As<Napi::TypedArray>();
  if (array.ElementSize() != sizeof(T) || array.ElementLength() < min_elements) {
    Napi::TypeError::New(env, std::string(what) + " has the wrong element type or is too short").ThrowAsJavaScriptException();
    return nullptr;
  }
  *keep = Napi::Persistent(array.As<Napi::Object>());
  auto* base = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  return reinterpret_cast<T*>(base);
}

Napi::Value ErrnoError(Napi::Env env, int err, const char* syscall) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + strerror(err));
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

}  // namespace

Napi::Function Handle::Init(Napi::Env env) {
  return DefineClass(env, "Handle",
                     {
                         InstanceMethod("registerSlab", &Handle::RegisterSlab),
                         InstanceMethod("setReadRing", &Handle::SetReadRing),
                         InstanceMethod("setSendTable", &Handle::SetSendTable),
                         InstanceMethod("startReading", &Handle::StartReading),
                         InstanceMethod("pauseReading", &Handle::PauseReading),
                         InstanceMethod("resumeReading", &Handle::ResumeReading),
                         InstanceMethod("send", &Handle::Send),
                         InstanceMethod("sendBuffer", &Handle::SendBuffer),
                         InstanceMethod("armWritable", &Handle::ArmWritable),
                         InstanceMethod("stats", &Handle::Stats),
                         InstanceMethod("ref", &Handle::RefHandle),
                         InstanceMethod("unref", &Handle::UnrefHandle),
                         InstanceMethod("close", &Handle::Close),
                         InstanceAccessor("fd", &Handle::GetFd, nullptr),
                     });
}

// new Handle(fd, kind): takes ownership of fd.
Handle::Handle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Handle>(info) {
  Napi::Env env = info.Env();
  fd_ = info[0].As<Napi::Number>().Int32Value();
  kind_ = static_cast<Kind>(info[1].As<Napi::Number>().Int32Value());
  poll_ = new uv_poll_t;
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  int rc = uv_poll_init(loop, poll_, fd_);
  if (rc != 0) {
    delete poll_;
    poll_ = nullptr;
    // The handle owned the fd: a failed construction must not leak it.
    close(fd_);
    fd_ = -1;
    closed_ = true;
    Napi::Error::New(env, std::string("uv_poll_init: ") + uv_strerror(rc)).ThrowAsJavaScriptException();
    return;
  }
  poll_->data = this;
  async_ = std::make_unique<Napi::AsyncContext>(env, "WeftHandle");
  if (kind_ == Kind::kNetlink) netlink_buffer_.resize(kNetlinkBuffer);
}

Handle::~Handle() { DoClose(); }

Napi::Value Handle::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), closed_ ? -1 : fd_); }

// registerSlab(index, buffer): the slab stays alive and pinned while registered.
Napi::Value Handle::RegisterSlab(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t index = info[0].As<Napi::Number>().Uint32Value();
  if (index > 255 || !info[1].IsTypedArray()) {
    Napi::TypeError::New(env, "registerSlab(index 0..255, Uint8Array)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto array = info[1].As<Napi::Uint8Array>();
  if (slabs_.size() <= index) slabs_.resize(index + 1);
  slabs_[index].ref = Napi::Persistent(array.As<Napi::Object>());
  slabs_[index].data = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  slabs_[index].length = array.ByteLength();
  return env.Undefined();
}

// setReadRing(slabIndex, stride, headroom, count, lengths, addrs?, ports?, families?, gso?)
Napi::Value Handle::SetReadRing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int slab = info[0].As<Napi::Number>().Int32Value();
  int stride = info[1].As<Napi::Number>().Int32Value();
  int headroom = info[2].As<Napi::Number>().Int32Value();
  int count = info[3].As<Napi::Number>().Int32Value();
  if (slab < 0 || static_cast<size_t>(slab) >= slabs_.size() || slabs_[slab].data == nullptr || stride <= headroom ||
      headroom < 0 || count <= 0 || static_cast<size_t>(stride) * count > slabs_[slab].length) {
    Napi::RangeError::New(env, "setReadRing: the ring does not fit its slab").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  ring_lengths_ = TypedData<int32_t>(info[4], &ring_refs_[0], count, "lengths");
  if (env.IsExceptionPending()) return env.Undefined();
  ring_addrs_ = TypedData<uint32_t>(info[5], &ring_refs_[1], static_cast<size_t>(count) * 4, "addrs");
  ring_ports_ = TypedData<uint16_t>(info[6], &ring_refs_[2], count, "ports");
  ring_families_ = TypedData<uint8_t>(info[7], &ring_refs_[3], count, "families");
  ring_gso_ = TypedData<uint16_t>(info[8], &ring_refs_[4], count, "gso");
  if (env.IsExceptionPending()) return env.Undefined();
  ring_slab_ = slab;
  ring_stride_ = stride;
  ring_headroom_ = headroom;
  ring_count_ = count;
  if (kind_ == Kind::kUdp4 || kind_ == Kind::kUdp6) {
    rx_msgs_.assign(count, {});
    rx_iovs_.assign(count, {});
    rx_names_.assign(count, {});
    rx_control_.assign(count * kRxControl, 0);
  }
  return env.Undefined();
}

// setSendTable(slabs: Uint8Array, offsets: Int32Array, lengths: Int32Array, addrs?: Uint32Array,
//              ports?: Uint16Array, gso?: Uint16Array)
Napi::Value Handle::SetSendTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "setSendTable: slabs must be a Uint8Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int capacity = static_cast<int>(info[0].As<Napi::TypedArray>().ElementLength());
  send_slabs_ = TypedData<uint8_t>(info[0], &send_refs_[0], capacity, "slabs");
  send_offsets_ = TypedData<int32_t>(info[1], &send_refs_[1], capacity, "offsets");
  send_lengths_ = TypedData<int32_t>(info[2], &send_refs_[2], capacity, "lengths");
  send_addrs_ = TypedData<uint32_t>(info[3], &send_refs_[3], static_cast<size_t>(capacity) * 4, "addrs");
  send_ports_ = TypedData<uint16_t>(info[4], &send_refs_[4], capacity, "ports");
  send_gso_ = TypedData<uint16_t>(info[5], &send_refs_[5], capacity, "gso");
  if (env.IsExceptionPending()) return env.Undefined();
  if ((kind_ == Kind::kUdp4 || kind_ == Kind::kUdp6) && (send_addrs_ == nullptr || send_ports_ == nullptr)) {
    Napi::TypeError::New(env, "setSendTable: a UDP socket needs addrs and ports").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  send_capacity_ = capacity;
  tx_msgs_.assign(capacity, {});
  tx_iovs_.assign(capacity, {});
  tx_names_.assign(capacity, {});
  tx_control_.assign(capacity * kTxControl, 0);
  return env.Undefined();
}

bool Handle::UpdatePoll(Napi::Env env) {
  if (closed_ || poll_ == nullptr) return false;
  int events = 0;
  if (reading_ && !paused_) events |= UV_READABLE;
  if (writable_armed_) events |= UV_WRITABLE;
  if (events == poll_events_) return true;
  int rc = events == 0 ? uv_poll_stop(poll_) : uv_poll_start(poll_, events, &Handle::OnPoll);
  if (rc != 0) {
    Napi::Error::New(env, std::string("uv_poll_start: ") + uv_strerror(rc)).ThrowAsJavaScriptException();
    return false;
  }
  poll_events_ = events;
  // While the poll is active the JS object must not be collected: the loop still points at it.
  if (events != 0 && !refed_self_) {
    Ref();
    refed_self_ = true;
  } else if (events == 0 && refed_self_) {
    Unref();
    refed_self_ = false;
  }
  return true;
}

// startReading(callback): callback(count) per batch; for netlink, callback(buffer) per datagram;
// a negative count is -errno of a read failure.
Napi::Value Handle::StartReading(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return env.Undefined();
  if (kind_ != Kind::kNetlink && ring_count_ == 0) {
    Napi::Error::New(env, "startReading: setReadRing first").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  on_read_ = Napi::Persistent(info[0].As<Napi::Function>());
  reading_ = true;
  paused_ = false;
  UpdatePoll(env);
  return env.Undefined();
}

Napi::Value Handle::PauseReading(const Napi::CallbackInfo& info) {
  paused_ = true;
  UpdatePoll(info.Env());
  return info.Env().Undefined();
}

Napi::Value Handle::ResumeReading(const Napi::CallbackInfo& info) {
  paused_ = false;
  UpdatePoll(info.Env());
  return info.Env().Undefined();
}

// armWritable(callback): calls back once, the next time the fd is writable.
Napi::Value Handle::ArmWritable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return env.Undefined();
  on_writable_ = Napi::Persistent(info[0].As<Napi::Function>());
  writable_armed_ = true;
  UpdatePoll(env);
  return env.Undefined();
}

void Handle::OnPoll(uv_poll_t* poll, int status, int events) {
  auto* self = static_cast<Handle*>(poll->data);
  if (self == nullptr || self->closed_) return;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  if (status < 0) {
    self->read_errors_++;
    self->last_read_errno_ = -status;
    if (self->reading_) self->Deliver(self->on_read_, {Napi::Number::New(env, status)});
    return;
  }
  if ((events & UV_WRITABLE) && self->writable_armed_) self->OnWritable();
  if (self->closed_) return;
  if ((events & UV_READABLE) && self->reading_ && !self->paused_) self->OnReadable();
}

void Handle::Deliver(Napi::FunctionReference& callback, const std::initializer_list<napi_value>& args) {
  if (callback.IsEmpty()) return;
  Napi::Env env = Env();
  // MakeCallback runs queued microtasks afterwards and reports a throw as an uncaught exception,
  // like any other callback from Node's loop.
  callback.MakeCallback(Value(), args, *async_);
  if (env.IsExceptionPending()) {
    Napi::Error err = env.GetAndClearPendingException();
    napi_fatal_exception(env, err.Value());
  }
}

void Handle::OnWritable() {
  writable_armed_ = false;
  UpdatePoll(Env());
  Napi::FunctionReference callback = std::move(on_writable_);
  Deliver(callback, {});
}

void Handle::OnReadable() {
  read_calls_++;
  switch (kind_) {
    case Kind::kTun:
      ReadTun();
      break;
    case Kind::kUdp4:
    case Kind::kUdp6:
      ReadUdp();
      break;
    case Kind::kNetlink:
      ReadNetlink();
      break;
  }
}

void Handle::ReadTun() {
  uint8_t* base = slabs_[ring_slab_].data;
  size_t room = static_cast<size_t>(ring_stride_ - ring_headroom_);
  // A TUN read cuts a packet longer than the buffer without saying so: one spare byte after the
  // slot tells a packet that filled it exactly from one that was cut.
  uint8_t spare;
  struct iovec iov[2];
  iov[1].iov_base = &spare;
  iov[1].iov_len = 1;
  int n = 0;
  while (n < ring_count_) {
    iov[0].iov_base = base + static_cast<size_t>(n) * ring_stride_ + ring_headroom_;
    iov[0].iov_len = room;
    ssize_t r = readv(fd_, iov, 2);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        read_errors_++;
        last_read_errno_ = errno;
      }
      break;
    }
    if (static_cast<size_t>(r) > room) {
      truncated_++;
      ring_lengths_[n++] = -1;
    } else {
      ring_lengths_[n++] = static_cast<int32_t>(r);
    }
  }
  if (n == 0) return;
  packets_read_ += n;
  Deliver(on_read_, {Napi::Number::New(Env(), n)});
}

void Handle::ReadUdp() {
  uint8_t* base = slabs_[ring_slab_].data;
  for (int i = 0; i < ring_count_; i++) {
    rx_iovs_[i].iov_base = base + static_cast<size_t>(i) * ring_stride_ + ring_headroom_;
    rx_iovs_[i].iov_len = static_cast<size_t>(ring_stride_ - ring_headroom_);
    struct msghdr& h = rx_msgs_[i].msg_hdr;
    h.msg_iov = &rx_iovs_[i];
    h.msg_iovlen = 1;
    h.msg_name = &rx_names_[i];
    h.msg_namelen = sizeof(struct sockaddr_storage);
    h.msg_control = ring_gso_ != nullptr ? &rx_control_[i * kRxControl] : nullptr;
    h.msg_controllen = ring_gso_ != nullptr ? kRxControl : 0;
    h.msg_flags = 0;
  }
  int n;
  do {
    n = recvmmsg(fd_, rx_msgs_.data(), ring_count_, MSG_DONTWAIT, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      read_errors_++;
      last_read_errno_ = errno;
    }
    return;
  }
  for (int i = 0; i < n; i++) {
    struct msghdr& h = rx_msgs_[i].msg_hdr;
    // A datagram longer than the slot was cut: say so with -1 rather than hand over a stub.
    if (h.msg_flags & MSG_TRUNC) {
      truncated_++;
      ring_lengths_[i] = -1;
    } else {
      ring_lengths_[i] = static_cast<int32_t>(rx_msgs_[i].msg_len);
    }
    const auto* name = reinterpret_cast<const struct sockaddr*>(&rx_names_[i]);
    if (ring_addrs_ != nullptr) {
      uint32_t* a = ring_addrs_ + static_cast<size_t>(i) * 4;
      if (name->sa_family == AF_INET) {
        const auto* sin = reinterpret_cast<const struct sockaddr_in*>(name);
        a[0] = ntohl(sin->sin_addr.s_addr);
        a[1] = a[2] = a[3] = 0;
        if (ring_ports_) ring_ports_[i] = ntohs(sin->sin_port);
        if (ring_families_) ring_families_[i] = 4;
      } else {
        const auto* sin6 = reinterpret_cast<const struct sockaddr_in6*>(name);
        const uint8_t* b = sin6->sin6_addr.s6_addr;
        for (int w = 0; w < 4; w++) {
          a[w] = (static_cast<uint32_t>(b[w * 4]) << 24) | (b[w * 4 + 1] << 16) | (b[w * 4 + 2] << 8) | b[w * 4 + 3];
        }
        if (ring_ports_) ring_ports_[i] = ntohs(sin6->sin6_port);
        if (ring_families_) ring_families_[i] = 6;
      }
    }
    if (ring_gso_ != nullptr) {
      ring_gso_[i] = 0;
      for (struct cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int size;
          memcpy(&size, CMSG_DATA(c), sizeof(size));
          ring_gso_[i] = static_cast<uint16_t>(size);
        }
      }
    }
  }
  packets_read_ += n;
  Deliver(on_read_, {Napi::Number::New(Env(), n)});
}

void Handle::ReadNetlink() {
  Napi::Env env = Env();
  while (!closed_ && reading_ && !paused_) {
    ssize_t r = recv(fd_, netlink_buffer_.data(), netlink_buffer_.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        // ENOBUFS: the kernel dropped messages for us; JS must resynchronise, so tell it.
        read_errors_++;
        last_read_errno_ = errno;
        Deliver(on_read_, {Napi::Number::New(env, -errno)});
      }
      return;
    }
    if (static_cast<size_t>(r) > netlink_buffer_.size()) {
      truncated_++;
      Deliver(on_read_, {Napi::Number::New(env, -EMSGSIZE)});
      continue;
    }
    packets_read_++;
    Napi::HandleScope scope(env);
    Deliver(on_read_, {Napi::Buffer<uint8_t>::Copy(env, netlink_buffer_.data(), static_cast<size_t>(r))});
  }
}

// send(start, count): sends descriptors [start, start + count); returns how many it consumed
// (sent, or dropped on an error other than EAGAIN). Fewer than count means the kernel said EAGAIN:
// arm writable and call again with the rest.
Napi::Value Handle::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int start = info[0].As<Napi::Number>().Int32Value();
  int count = info[1].As<Napi::Number>().Int32Value();
  if (closed_) return Napi::Number::New(env, 0);
  if (start < 0 || count < 0 || start + count > send_capacity_) {
    Napi::RangeError::New(env, "send: range outside the send table").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int consumed = kind_ == Kind::kTun ? SendTun(start, count) : SendUdp(start, count);
  return Napi::Number::New(env, consumed);
}

int Handle::SendTun(int start, int count) {
  int i = start;
  const int end = start + count;
  while (i < end) {
    uint32_t s = send_slabs_[i];
    int32_t off = send_offsets_[i];
    int32_t len = send_lengths_[i];
    if (s >= slabs_.size() || slabs_[s].data == nullptr || off < 0 || len <= 0 ||
        static_cast<size_t>(off) + len > slabs_[s].length) {
      bad_descriptors_++;
      i++;
      continue;
    }
    ssize_t w = write(fd_, slabs_[s].data + off, static_cast<size_t>(len));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        send_again_++;
        break;
      }
      send_errors_++;
      last_send_errno_ = errno;
    } else {
      packets_sent_++;
    }
    i++;
  }
  return i - start;
}

int Handle::SendUdp(int start, int count) {
  int i = start;
  const int end = start + count;
  while (i < end) {
    // Build a run of valid descriptors; a bad one is counted and skipped between runs.
    int built = 0;
    int j = i;
    for (; j < end; j++) {
      uint32_t s = send_slabs_[j];
      int32_t off = send_offsets_[j];
      int32_t len = send_lengths_[j];
      if (s >= slabs_.size() || slabs_[s].data == nullptr || off < 0 || len < 0 ||
          static_cast<size_t>(off) + len > slabs_[s].length) {
        break;
      }
      struct iovec& iov = tx_iovs_[built];
      iov.iov_base = slabs_[s].data + off;
      iov.iov_len = static_cast<size_t>(len);
      struct msghdr& h = tx_msgs_[built].msg_hdr;
      memset(&h, 0, sizeof(h));
      h.msg_iov = &iov;
      h.msg_iovlen = 1;
      const uint32_t* a = send_addrs_ + static_cast<size_t>(j) * 4;
      if (kind_ == Kind::kUdp4) {
        auto* sin = reinterpret_cast<struct sockaddr_in*>(&tx_names_[built]);
        sin->sin_family = AF_INET;
        sin->sin_port = htons(send_ports_[j]);
        sin->sin_addr.s_addr = htonl(a[0]);
        h.msg_namelen = sizeof(struct sockaddr_in);
      } else {
        auto* sin6 = reinterpret_cast<struct sockaddr_in6*>(&tx_names_[built]);
        memset(sin6, 0, sizeof(*sin6));
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(send_ports_[j]);
        for (int w = 0; w < 4; w++) {
          sin6->sin6_addr.s6_addr[w * 4] = a[w] >> 24;
          sin6->sin6_addr.s6_addr[w * 4 + 1] = (a[w] >> 16) & 0xff;
          sin6->sin6_addr.s6_addr[w * 4 + 2] = (a[w] >> 8) & 0xff;
          sin6->sin6_addr.s6_addr[w * 4 + 3] = a[w] & 0xff;
        }
        h.msg_namelen = sizeof(struct sockaddr_in6);
      }
      h.msg_name = &tx_names_[built];
      if (send_gso_ != nullptr && send_gso_[j] > 0) {
        uint8_t* control = &tx_control_[built * kTxControl];
        h.msg_control = control;
        h.msg_controllen = kTxControl;
        struct cmsghdr* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size = send_gso_[j];
        memcpy(CMSG_DATA(c), &size, sizeof(size));
      }
      built++;
    }
    if (built == 0) {
      bad_descriptors_++;
      i++;
      continue;
    }
    int done = 0;
    while (done < built) {
      int r = sendmmsg(fd_, tx_msgs_.data() + done, static_cast<unsigned int>(built - done), MSG_DONTWAIT);
      if (r > 0) {
        done += r;
        packets_sent_ += r;
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        send_again_++;
        return i + done - start;
      }
      // The first message of the run failed for good (no route, too big, refused): drop it.
      send_errors_++;
      last_send_errno_ = errno;
      done++;
    }
    i += built;
  }
  return i - start;
}

// sendBuffer(buffer): one datagram to the kernel (netlink) and the number of bytes sent.
Napi::Value Handle::SendBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return ErrnoError(env, EBADF, "sendto");
  auto buf = info[0].As<Napi::Uint8Array>();
  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof(kernel));
  kernel.nl_family = AF_NETLINK;
  ssize_t r;
  do {
    r = sendto(fd_, buf.Data(), buf.ByteLength(), 0, reinterpret_cast<struct sockaddr*>(&kernel), sizeof(kernel));
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ErrnoError(env, errno, "sendto");
  return Napi::Number::New(env, static_cast<double>(r));
}

Napi::Value Handle::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("readCalls", read_calls_);
  o.Set("packetsRead", packets_read_);
  o.Set("readErrors", read_errors_);
  o.Set("lastReadErrno", last_read_errno_);
  o.Set("truncated", truncated_);
  o.Set("packetsSent", packets_sent_);
  o.Set("sendErrors", send_errors_);
  o.Set("sendAgain", send_again_);
  o.Set("lastSendErrno", last_send_errno_);
  o.Set("badDescriptors", bad_descriptors_);
  return o;
}

Napi::Value Handle::RefHandle(const Napi::CallbackInfo& info) {
  if (poll_ != nullptr && !closed_) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
  return info.Env().Undefined();
}

Napi::Value Handle::UnrefHandle(const Napi::CallbackInfo& info) {
  if (poll_ != nullptr && !closed_) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
  return info.Env().Undefined();
}

Napi::Value Handle::Close(const Napi::CallbackInfo& info) {
  DoClose();
  return info.Env().Undefined();
}

void Handle::DoClose() {
  if (closed_) return;
  closed_ = true;
  reading_ = false;
  writable_armed_ = false;
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    // The poll handle outlives this object until libuv has closed it.
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  if (refed_self_) {
    refed_self_ = false;
    Unref();
  }
  on_read_.Reset();
  on_writable_.Reset();
  for (auto& s : slabs_) s.ref.Reset();
  slabs_.clear();
  for (auto& r : ring_refs_) r.Reset();
  for (auto& r : send_refs_) r.Reset();
  ring_count_ = 0;
  send_capacity_ = 0;
}

}  // namespace weft
