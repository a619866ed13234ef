// The Handle's JS surface, its argument checks, and its poll lifecycle on Node's loop.
#include "handle.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <climits>
#include <mutex>
#include <set>
#include <unordered_set>
#include <string>

#include "args.h"
#include "errors.h"

namespace weft {

namespace {

// The handles alive on this thread (a handle is used only from the JS thread that made it): a
// method called on any other object, even one another addon wrapped, is a TypeError, not a
// cast. Cheaper per call than a napi type tag, which send() would pay once per batch.
// Never destroyed: a finalizer may run after this thread's thread_local destructors.
std::unordered_set<const Handle*>& LiveHandles() {
  thread_local auto* live = new std::unordered_set<const Handle*>();
  return *live;
}
// recvmmsg takes at most UIO_MAXIOV messages per call.
constexpr int32_t kMaxRingSlots = 1024;
constexpr int32_t kMaxStride = 1 << 20;
constexpr int32_t kMaxSendTable = 1 << 16;
constexpr size_t kNetlinkBuffer = 1 << 16;
// The longest busy-poll window: 10 ms of spinning is already a core's worth of waste.
constexpr int64_t kMaxBusyPollMicros = 10000;
// The most iovec entries one packet may have (the kernel's UIO_MAXIOV).
constexpr size_t kMaxPieces = 1024;

// Fds owned by a live Handle, in any thread: two handles polling one fd would confuse libuv.
std::mutex owned_mutex;
std::set<int> owned_fds;

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kTun:
      return "an attached TUN/TAP queue";
    case Kind::kUdp4:
      return "a UDP socket over IPv4";
    case Kind::kUdp6:
      return "a UDP socket over IPv6";
    case Kind::kNetlink:
      return "a netlink socket";
  }
  return "";
}

// Whether `fd` is what `kind` says: a handle takes ownership of its fd and closes it.
bool FdIsKind(int fd, Kind kind) {
  if (kind == Kind::kTun) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    return ioctl(fd, TUNGETIFF, &ifr) == 0;
  }
  int domain = 0;
  int type = 0;
  socklen_t len = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return false;
  len = sizeof(int);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return false;
  switch (kind) {
    case Kind::kUdp4:
      return domain == AF_INET && type == SOCK_DGRAM;
    case Kind::kUdp6:
      return domain == AF_INET6 && type == SOCK_DGRAM;
    case Kind::kNetlink:
      return domain == AF_NETLINK;
    default:
      return false;
  }
}

Napi::Value ThrowClosed(Napi::Env env) {
  ThrowError(env, "the handle is closed", "ERR_TUN_CLOSED");
  return env.Undefined();
}

// An optional typed array: undefined leaves `pin` empty.
bool PinOptional(Napi::Env env, Napi::Value value, Pinned* pin, napi_typedarray_type type, size_t min, const char* what) {
  if (value.IsUndefined()) return true;
  return pin->Pin(env, value, type, min, what);
}

}  // namespace

template <Handle::Method M>
Napi::Value Handle::Checked(const Napi::CallbackInfo& info) {
  Handle* self = From(info);
  if (self == nullptr) return info.Env().Undefined();
  return (self->*M)(info);
}

Handle* Handle::From(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  napi_value self = info.This();
  void* wrapped = nullptr;
  // napi_unwrap refuses anything not wrapped; the set refuses what another addon wrapped.
  if (self != nullptr && napi_unwrap(env, self, &wrapped) == napi_ok && wrapped != nullptr) {
    auto* handle = static_cast<Handle*>(static_cast<Napi::ObjectWrap<Handle>*>(wrapped));
    if (LiveHandles().count(handle) != 0) return handle;
  }
  ThrowType(info.Env(), "this is not a weft Handle");
  return nullptr;
}

Napi::Function Handle::Init(Napi::Env env) {
  Napi::Function ctor = DefineClass(env, "Handle", {});
  Napi::Object proto = ctor.Get("prototype").As<Napi::Object>();
  struct Entry {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  };
  const Entry methods[] = {
      {"attachSlab", &Checked<&Handle::AttachSlab>},     {"setReadRing", &Checked<&Handle::SetReadRing>},
      {"setSendTable", &Checked<&Handle::SetSendTable>}, {"startReading", &Checked<&Handle::StartReading>},
      {"pauseReading", &Checked<&Handle::PauseReading>}, {"resumeReading", &Checked<&Handle::ResumeReading>},
      {"send", &Checked<&Handle::Send>},                 {"sendBuffer", &Checked<&Handle::SendBuffer>},
      {"armWritable", &Checked<&Handle::ArmWritable>},   {"stats", &Checked<&Handle::Stats>},
      {"ref", &Checked<&Handle::RefHandle>},             {"unref", &Checked<&Handle::UnrefHandle>},
      {"close", &Checked<&Handle::Close>},               {"setOption", &Checked<&Handle::SetOption>},
      {"getOption", &Checked<&Handle::GetOption>},       {"setOffload", &Checked<&Handle::SetOffload>},
      {"setBusyPoll", &Checked<&Handle::SetBusyPoll>},   {"release", &Checked<&Handle::Release>},
      {"steerByFlowHash", &Checked<&Handle::SteerByFlowHash>},
  };
  for (const auto& m : methods) proto.Set(m.name, Napi::Function::New(env, m.fn, m.name));
  proto.DefineProperties({
      Napi::PropertyDescriptor::Accessor(env, proto, "fd", &Handle::GetFd),
      Napi::PropertyDescriptor::Accessor(env, proto, "failedErrno", &Handle::GetFailedErrno),
  });
  return ctor;
}

// new Handle(fd, kind): takes ownership of fd, which must be what `kind` says.
Handle::Handle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Handle>(info) {
  Napi::Env env = info.Env();
  int32_t fd = -1;
  int32_t kind = 0;
  if (!ArgInt32(info, 0, "fd", 0, INT_MAX, &fd) || !ArgInt32(info, 1, "kind", 0, 3, &kind)) return;
  if (!FdIsKind(fd, static_cast<Kind>(kind))) {
    ThrowType(env, "fd " + std::to_string(fd) + " is not " + KindName(static_cast<Kind>(kind)));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(owned_mutex);
    if (!owned_fds.insert(fd).second) {
      ThrowType(env, "fd " + std::to_string(fd) + " already belongs to another handle");
      return;
    }
  }
  // From here the fd is ours: a failure below closes it.
  fd_ = fd;
  kind_ = static_cast<Kind>(kind);
  closed_ = false;
  int flags = fcntl(fd_, F_GETFL);
  if (flags >= 0 && !(flags & O_NONBLOCK)) fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  poll_ = new uv_poll_t;
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  int rc = uv_poll_init(loop, poll_, fd_);
  if (rc != 0) {
    delete poll_;
    poll_ = nullptr;
    DoClose();
    ThrowError(env, std::string("uv_poll_init: ") + uv_strerror(rc));
    return;
  }
  poll_->data = this;
  async_ = std::make_unique<Napi::AsyncContext>(env, "WeftHandle");
  if (kind_ == Kind::kNetlink) netlink_buffer_.resize(kNetlinkBuffer);
  LiveHandles().insert(this);
}

Handle::~Handle() {
  LiveHandles().erase(this);
  DoClose();
}

Napi::Value Handle::GetFd(const Napi::CallbackInfo& info) {
  Handle* self = From(info);
  if (self == nullptr) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), self->closed_ ? -1 : self->fd_);
}

Napi::Value Handle::GetFailedErrno(const Napi::CallbackInfo& info) {
  Handle* self = From(info);
  if (self == nullptr) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), self->failed_errno_);
}

// attachSlab(index, buffer): send descriptors name the slab by index. The read ring's slab
// cannot be swapped for other memory under it (setReadRing does that, with its checks).
Napi::Value Handle::AttachSlab(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return ThrowClosed(env);
  int32_t index = 0;
  if (!ArgInt32(info, 0, "slab index", 0, SlabTable::kSlabs - 1, &index)) return env.Undefined();
  Pinned pin;
  if (!SlabTable::PinSlab(env, info[1], &pin)) return env.Undefined();
  if (index == ring_.slab) {
    const Pinned* current = slabs_.Get(index);
    if (current == nullptr || !pin.SameMemory(*current)) {
      ThrowRange(env, "slab " + std::to_string(index) + " holds the read ring: attach this slab at another index");
      return env.Undefined();
    }
  }
  slabs_.Put(index, std::move(pin));
  return env.Undefined();
}

// setReadRing(slabIndex, slab, stride, headroom, count, lengths, addrs?, ports?, families?, gso?):
// attaches `slab` as slabIndex and reads into it; all or nothing.
Napi::Value Handle::SetReadRing(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return ThrowClosed(env);
  if (kind_ == Kind::kNetlink) {
    ThrowType(env, "a netlink handle has no read ring");
    return env.Undefined();
  }
  int32_t index = 0;
  int32_t stride = 0;
  int32_t headroom = 0;
  int32_t count = 0;
  Pinned slab;
  if (!ArgInt32(info, 0, "slab index", 0, SlabTable::kSlabs - 1, &index) || !SlabTable::PinSlab(env, info[1], &slab) ||
      !ArgInt32(info, 2, "stride", 1, kMaxStride, &stride) ||
      !ArgInt32(info, 3, "headroom", 0, stride - 1, &headroom) ||
      !ArgInt32(info, 4, "count", 1, kMaxRingSlots, &count)) {
    return env.Undefined();
  }
  if (static_cast<size_t>(stride) * static_cast<size_t>(count) > slab.size()) {
    ThrowRange(env, "the ring (count x stride bytes) does not fit its slab");
    return env.Undefined();
  }
  ReadRing next;
  size_t n = static_cast<size_t>(count);
  if (!next.lengths.Pin(env, info[5], napi_int32_array, n, "lengths") ||
      !PinOptional(env, info[6], &next.addrs, napi_uint32_array, n * 4, "addrs") ||
      !PinOptional(env, info[7], &next.ports, napi_uint16_array, n, "ports") ||
      !PinOptional(env, info[8], &next.families, napi_uint8_array, n, "families") ||
      !PinOptional(env, info[9], &next.gso, napi_uint16_array, n, "gso")) {
    return env.Undefined();
  }
  next.slab = index;
  next.stride = static_cast<size_t>(stride);
  next.headroom = static_cast<size_t>(headroom);
  next.count = n;
  slabs_.Put(index, std::move(slab));
  ring_ = std::move(next);
  ring_.pins.Build(env, {&ring_.lengths, &ring_.addrs, &ring_.ports, &ring_.families, &ring_.gso});
  if (IsUdp()) ResizeUdpVectors();
  return env.Undefined();
}

// setSendTable(slabs: Uint8Array, offsets: Int32Array, lengths: Int32Array, addrs?: Uint32Array,
//              ports?: Uint16Array, gso?: Uint16Array, flags?: Uint8Array): all or nothing.
Napi::Value Handle::SetSendTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return ThrowClosed(env);
  if (kind_ == Kind::kNetlink) {
    ThrowType(env, "a netlink handle has no send table: use sendBuffer");
    return env.Undefined();
  }
  SendTable next;
  if (!next.slabs.Pin(env, info[0], napi_uint8_array, 1, "slabs")) return env.Undefined();
  size_t capacity = next.slabs.size();
  if (capacity > static_cast<size_t>(kMaxSendTable)) {
    ThrowRange(env, "a send table holds at most 65536 descriptors");
    return env.Undefined();
  }
  if (!next.offsets.Pin(env, info[1], napi_int32_array, capacity, "offsets") ||
      !next.lengths.Pin(env, info[2], napi_int32_array, capacity, "lengths") ||
      !PinOptional(env, info[3], &next.addrs, napi_uint32_array, capacity * 4, "addrs") ||
      !PinOptional(env, info[4], &next.ports, napi_uint16_array, capacity, "ports") ||
      !PinOptional(env, info[5], &next.gso, napi_uint16_array, capacity, "gso") ||
      !PinOptional(env, info[6], &next.flags, napi_uint8_array, capacity, "flags")) {
    return env.Undefined();
  }
  if (IsUdp() && (!next.addrs.pinned() || !next.ports.pinned())) {
    ThrowType(env, "setSendTable: a UDP socket needs addrs and ports");
    return env.Undefined();
  }
  next.capacity = capacity;
  table_ = std::move(next);
  table_.pins.Build(env, {&table_.slabs, &table_.offsets, &table_.lengths, &table_.addrs, &table_.ports, &table_.gso,
                          &table_.flags});
  tx_msgs_.assign(capacity, {});
  tx_ends_.assign(capacity, 0);
  tx_segments_.assign(capacity, 1);
  tx_iovs_.assign(capacity, {});
  tx_names_.assign(capacity, {});
  tx_control_.assign(capacity * CMSG_SPACE(sizeof(uint16_t)), 0);
  return env.Undefined();
}

// startReading(callback): callback(count) per batch; for netlink, callback(buffer) per datagram;
// a negative count is -errno: once for a failure that ends the handle (see Fail), and for
// netlink also ENOBUFS (the kernel dropped messages: resynchronise).
Napi::Value Handle::StartReading(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) return ThrowClosed(env);
  Napi::Function callback;
  if (!ArgFunction(info, 0, "callback", &callback)) return env.Undefined();
  if (failed_errno_ != 0) return ThrowErrno(env, failed_errno_, "read");
  if (kind_ != Kind::kNetlink && ring_.slab < 0) {
    ThrowError(env, "startReading: setReadRing first");
    return env.Undefined();
  }
  on_read_ = Napi::Persistent(callback);
  bool was_reading = reading_;
  bool was_paused = paused_;
  reading_ = true;
  paused_ = false;
  if (!UpdatePoll()) {
    reading_ = was_reading;
    paused_ = was_paused;
    return ThrowErrno(env, EBADF, "uv_poll_start");
  }
  return env.Undefined();
}

Napi::Value Handle::PauseReading(const Napi::CallbackInfo& info) {
  paused_ = true;
  UpdatePoll();
  return info.Env().Undefined();
}

Napi::Value Handle::ResumeReading(const Napi::CallbackInfo& info) {
  paused_ = false;
  if (!UpdatePoll()) Fail(EBADF);
  return info.Env().Undefined();
}

// armWritable(callback): calls back once, the next time the fd is writable.
Napi::Value Handle::ArmWritable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Function callback;
  if (!ArgFunction(info, 0, "callback", &callback)) return env.Undefined();
  if (closed_ || failed_errno_ != 0) return env.Undefined();
  on_writable_ = Napi::Persistent(callback);
  writable_armed_ = true;
  if (!UpdatePoll()) Fail(EBADF);
  return env.Undefined();
}

// send(start, count): sends descriptors [start, start + count); returns how many it consumed
// (sent, or dropped and counted: a bad descriptor, a hard error, or a failed handle). Fewer than
// count means the kernel said EAGAIN: arm writable and call again with the rest.
Napi::Value Handle::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t start = 0;
  int64_t count = 0;
  if (!ArgInt(info, 0, "start", 0, INT32_MAX, &start) || !ArgInt(info, 1, "count", 0, INT32_MAX, &count))
    return env.Undefined();
  if (closed_) return Napi::Number::New(env, 0);
  if (kind_ == Kind::kNetlink) {
    ThrowType(env, "a netlink handle sends with sendBuffer");
    return env.Undefined();
  }
  if (table_.capacity == 0) {
    ThrowError(env, "send: setSendTable first");
    return env.Undefined();
  }
  if (static_cast<uint64_t>(start + count) > table_.capacity) {
    ThrowRange(env, "send: range outside the send table");
    return env.Undefined();
  }
  if (failed_errno_ != 0) {
    send_errors_ += static_cast<double>(count);
    last_send_errno_ = failed_errno_;
    return Napi::Number::New(env, static_cast<double>(count));
  }
  if (count == 0) return Napi::Number::New(env, 0);
  // JS may have detached or shrunk any of this memory since the last call: the table is
  // re-checked here, each slab the first time a descriptor names it.
  slabs_.BeginCall();
  if (!table_.pins.Check(env)) {
    table_ = SendTable();
    ThrowType(env, "send: the send table's memory was detached or shrunk: set a new send table");
    return env.Undefined();
  }
  size_t consumed = kind_ == Kind::kTun ? SendTun(static_cast<size_t>(start), static_cast<size_t>(count))
                                        : SendUdp(static_cast<size_t>(start), static_cast<size_t>(count));
  return Napi::Number::New(env, static_cast<double>(consumed));
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
  o.Set("failedErrno", failed_errno_);
  return o;
}

// setBusyPoll(microseconds): after each batch read, poll without sleeping this long (0: off).
Napi::Value Handle::SetBusyPoll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t us = 0;
  if (!ArgInt(info, 0, "busy poll microseconds", 0, kMaxBusyPollMicros, &us)) return env.Undefined();
  if (closed_) return ThrowClosed(env);
  if (us > 0 && idle_ == nullptr) {
    idle_ = new uv_idle_t;
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    uv_idle_init(loop, idle_);
    idle_->data = this;
    // It spins only for a while after a batch: it never keeps the process alive by itself.
    uv_unref(reinterpret_cast<uv_handle_t*>(idle_));
  }
  busy_poll_ns_ = static_cast<uint64_t>(us) * 1000;
  if (busy_poll_ns_ == 0 && idle_ != nullptr) uv_idle_stop(idle_);
  return env.Undefined();
}

void Handle::Spin() {
  if (busy_poll_ns_ == 0 || idle_ == nullptr) return;
  spin_until_ = uv_hrtime() + busy_poll_ns_;
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(idle_))) uv_idle_start(idle_, &Handle::OnIdle);
}

void Handle::OnIdle(uv_idle_t* idle) {
  auto* self = static_cast<Handle*>(idle->data);
  if (self == nullptr || self->closed_ || uv_hrtime() >= self->spin_until_) uv_idle_stop(idle);
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

// release(): gives the fd up without closing it, for a handle in another thread to take (new
// Handle(fd, kind) there): this handle is closed as by close(), its poll removed from this
// loop, and the fd belongs to no handle until then. Returns the fd.
Napi::Value Handle::Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_ || fd_ < 0) return ThrowClosed(env);
  int fd = fd_;
  fd_ = -1;
  {
    std::lock_guard<std::mutex> lock(owned_mutex);
    owned_fds.erase(fd);
  }
  DoClose();
  return Napi::Number::New(env, fd);
}

// Starts or stops the poll to match what is wanted; false when libuv refused.
bool Handle::UpdatePoll() {
  if (closed_ || poll_ == nullptr) return false;
  int events = 0;
  if (failed_errno_ == 0) {
    if (reading_ && !paused_) events |= UV_READABLE;
    if (writable_armed_) events |= UV_WRITABLE;
  }
  if (events != poll_events_) {
    int rc = events == 0 ? uv_poll_stop(poll_) : uv_poll_start(poll_, events, &Handle::OnPoll);
    if (rc != 0) return false;
    poll_events_ = events;
  }
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

void Handle::OnPoll(uv_poll_t* poll, int status, int events) {
  auto* self = static_cast<Handle*>(poll->data);
  if (self == nullptr || self->closed_) return;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  // Held for the whole callback, so the object outlives anything JS does in it.
  Napi::Object keep = self->Value();
  (void)keep;
  if (status < 0) {
    self->OnPollError();
    return;
  }
  if ((events & UV_WRITABLE) && self->writable_armed_) self->OnWritable();
  if (self->closed_) return;
  if ((events & UV_READABLE) && self->reading_ && !self->paused_) self->OnReadable();
}

// libuv stops a poll that saw POLLERR and says only EBADF: ask the fd what happened. A socket's
// pending error (SO_ERROR, e.g. a netlink ENOBUFS) is taken and reading goes on; a TUN queue
// whose device is gone (EBADFD), or an fd with nothing to say, has failed for good.
void Handle::OnPollError() {
  poll_events_ = 0;
  int err = EBADF;
  if (kind_ == Kind::kTun) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (ioctl(fd_, TUNGETIFF, &ifr) != 0) err = errno;
  } else {
    int pending = 0;
    socklen_t len = sizeof(pending);
    if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &pending, &len) == 0 && pending != 0) {
      read_errors_++;
      last_read_errno_ = pending;
      if (kind_ == Kind::kNetlink && reading_) Deliver(on_read_, {Napi::Number::New(Env(), -pending)});
      if (closed_) return;
      if (UpdatePoll()) return;
    }
  }
  Fail(err);
}

// The fd cannot be used any more: deliver -errno to the read callback once, stop polling (the
// process may exit), run a pending writable callback (its send() now consumes and counts), and
// make every later send() count its descriptors as errors. Inside a call from JS (`deliver`
// false) no callback runs.
void Handle::Fail(int err, bool deliver) {
  if (failed_errno_ != 0 || closed_) return;
  failed_errno_ = err;
  read_errors_++;
  last_read_errno_ = err;
  bool was_reading = reading_;
  bool writable = writable_armed_;
  reading_ = false;
  writable_armed_ = false;
  UpdatePoll();
  Napi::FunctionReference on_read = std::move(on_read_);
  Napi::FunctionReference on_writable = std::move(on_writable_);
  if (!deliver) return;
  if (was_reading) Deliver(on_read, {Napi::Number::New(Env(), -err)});
  if (writable && !closed_) Deliver(on_writable, {});
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
  UpdatePoll();
  Napi::FunctionReference callback = std::move(on_writable_);
  Deliver(callback, {});
}

bool Handle::GatherPacket(napi_env env, size_t first, size_t end, struct iovec* iovs, size_t* pieces) {
  const uint8_t* slabs = table_.slabs.As<uint8_t>();
  const int32_t* offsets = table_.offsets.As<int32_t>();
  const int32_t* lengths = table_.lengths.As<int32_t>();
  const uint8_t* flags = table_.flags.pinned() ? table_.flags.As<uint8_t>() : nullptr;
  // The packet runs to the next descriptor that does not continue it, or to `end`: what lies
  // past the caller's range is not this call's (it may be left from an earlier batch).
  size_t last = first + 1;
  if (flags != nullptr) {
    while (last < end && (flags[last] & kContinues) != 0) last++;
  }
  *pieces = last - first;
  bool ok = last - first <= kMaxPieces && (flags == nullptr || (flags[first] & kContinues) == 0);
  for (size_t j = first; ok && j < last; j++) {
    SlabRange piece;
    if (!slabs_.ResolveInCall(env, slabs[j], offsets[j], lengths[j], &piece)) {
      ok = false;
      break;
    }
    iovs[j - first].iov_base = piece.data();
    iovs[j - first].iov_len = piece.size();
  }
  return ok;
}

bool Handle::CheckRing(SlabRange* out) {
  napi_env env = Env();
  if (ring_.slab < 0 || !slabs_.Check(env, static_cast<uint32_t>(ring_.slab))) return false;
  if (!slabs_.Resolve(static_cast<uint32_t>(ring_.slab), 0, static_cast<int64_t>(ring_.stride * ring_.count), out))
    return false;
  return ring_.pins.Check(env);
}

void Handle::OnReadable() {
  read_calls_++;
  if (kind_ == Kind::kNetlink) {
    ReadNetlink();
    return;
  }
  SlabRange ring;
  // The ring's memory was detached or shrunk under it: nothing may be written there again.
  if (!CheckRing(&ring)) {
    Fail(EFAULT);
    return;
  }
  double before = packets_read_;
  int err = kind_ == Kind::kTun ? ReadTun(ring) : ReadUdp(ring);
  if (err != 0) Fail(err);
  else if (packets_read_ > before && !closed_) Spin();
}

void Handle::DoClose() {
  if (closed_) return;
  closed_ = true;
  reading_ = false;
  writable_armed_ = false;
  if (idle_ != nullptr) {
    uv_idle_stop(idle_);
    idle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(idle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
    idle_ = nullptr;
  }
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    // The poll handle outlives this object until libuv has closed it.
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  if (fd_ >= 0) {
    close(fd_);
    std::lock_guard<std::mutex> lock(owned_mutex);
    owned_fds.erase(fd_);
    fd_ = -1;
  }
  if (refed_self_) {
    refed_self_ = false;
    Unref();
  }
  on_read_.Reset();
  on_writable_.Reset();
  slabs_.Clear();
  ring_ = ReadRing();
  table_ = SendTable();
}

}  // namespace weft
