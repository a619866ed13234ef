// A file descriptor driven by libuv's uv_poll on Node's own loop, with batched reads into
// caller-owned slabs and batched sends from a caller-filled descriptor table. It knows three
// kinds of fd: a TUN/TAP queue (read/write, one packet each; tun_io.cc), a UDP socket
// (recvmmsg/sendmmsg; udp_io.cc) and a netlink socket (whole datagrams, copied; netlink_io.cc).
// The poll lifecycle, argument checks and failure handling are in handle.cc.
#pragma once

#include <napi.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "slab.h"

namespace weft {

enum class Kind { kTun = 0, kUdp4 = 1, kUdp6 = 2, kNetlink = 3 };

// Where reads go: `count` slots of `stride` bytes in slab `slab`, packet data after `headroom`;
// per slot the addon writes a length and, for UDP, the source and the GRO segment size.
struct ReadRing {
  int slab = -1;
  size_t stride = 0;
  size_t headroom = 0;
  size_t count = 0;
  Pinned lengths;   // int32 per slot
  Pinned addrs;     // uint32 x4 per slot: an IPv4 source, or IPv6 as big-endian words
  Pinned ports;     // uint16 per slot
  Pinned families;  // uint8 per slot: 4 or 6
  Pinned gso;       // uint16 per slot: UDP GRO segment size, 0 when not coalesced
  PinSet pins;      // the arrays above, checked together
};

// Bits of SendTable.flags.
constexpr uint8_t kContinues = 1;  // these bytes continue the packet of the descriptor before

// What send() reads: descriptor i says slab, absolute offset, length, destination, GSO size. A
// packet is one descriptor and the run of kContinues descriptors after it, sent as one iovec
// (headers in one slab, payload in another, without a copy); its destination and GSO size are
// its first descriptor's.
struct SendTable {
  size_t capacity = 0;
  Pinned slabs;    // uint8
  Pinned offsets;  // int32
  Pinned lengths;  // int32
  Pinned addrs;    // uint32 x4
  Pinned ports;    // uint16
  Pinned gso;      // uint16
  Pinned flags;    // uint8
  PinSet pins;     // the arrays above, checked together
};

class Handle : public Napi::ObjectWrap<Handle> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Handle(const Napi::CallbackInfo& info);
  ~Handle() override;

 private:
  using Method = Napi::Value (Handle::*)(const Napi::CallbackInfo&);
  template <Method M>
  static Napi::Value Checked(const Napi::CallbackInfo& info);
  static Napi::Value GetFd(const Napi::CallbackInfo& info);
  static Napi::Value GetFailedErrno(const Napi::CallbackInfo& info);
  static Handle* From(const Napi::CallbackInfo& info);

  // JS methods (handle.cc).
  Napi::Value AttachSlab(const Napi::CallbackInfo& info);
  Napi::Value SetReadRing(const Napi::CallbackInfo& info);
  Napi::Value SetSendTable(const Napi::CallbackInfo& info);
  Napi::Value StartReading(const Napi::CallbackInfo& info);
  Napi::Value PauseReading(const Napi::CallbackInfo& info);
  Napi::Value ResumeReading(const Napi::CallbackInfo& info);
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value SendBuffer(const Napi::CallbackInfo& info);  // netlink_io.cc
  Napi::Value ArmWritable(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value RefHandle(const Napi::CallbackInfo& info);
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  // options.cc
  Napi::Value SetOption(const Napi::CallbackInfo& info);
  Napi::Value GetOption(const Napi::CallbackInfo& info);
  Napi::Value SetOffload(const Napi::CallbackInfo& info);
  Napi::Value SetBusyPoll(const Napi::CallbackInfo& info);
  Napi::Value SteerByFlowHash(const Napi::CallbackInfo& info);  // options.cc

  // Poll lifecycle (handle.cc).
  static void OnPoll(uv_poll_t* poll, int status, int events);
  void OnPollError();
  void OnReadable();
  void OnWritable();
  bool UpdatePoll();
  void Fail(int err, bool deliver = true);
  void Deliver(Napi::FunctionReference& callback, const std::initializer_list<napi_value>& args);
  void DoClose();
  bool IsUdp() const { return kind_ == Kind::kUdp4 || kind_ == Kind::kUdp6; }
  // The ring's memory, re-checked (it may have been detached since the last batch).
  bool CheckRing(SlabRange* out);

  // Per kind (tun_io.cc, udp_io.cc, netlink_io.cc). A read returns an errno that ends the
  // handle (see Fail), or 0.
  int ReadTun(const SlabRange& ring);
  int ReadUdp(const SlabRange& ring);
  void ReadNetlink();
  size_t SendTun(size_t start, size_t count);
  size_t SendUdp(size_t start, size_t count);
  // The iovec of the packet whose first descriptor is `first` (< end), into iovs; its descriptor
  // count in *pieces; false when a descriptor does not resolve (the packet is dropped whole).
  bool GatherPacket(napi_env env, size_t first, size_t end, struct iovec* iovs, size_t* pieces);
  void ResizeUdpVectors();

  int fd_ = -1;
  Kind kind_ = Kind::kTun;
  bool closed_ = true;
  bool reading_ = false;
  bool paused_ = false;
  bool writable_armed_ = false;
  bool refed_self_ = false;
  // Non-zero once the fd failed for good (e.g. EBADFD: the TUN device was deleted).
  int failed_errno_ = 0;
  uv_poll_t* poll_ = nullptr;
  int poll_events_ = 0;
  // Busy polling: after a batch, Node's loop polls without sleeping for busy_poll_ns_ (an idle
  // handle makes libuv's poll timeout zero), so what comes next on any fd of the loop is read
  // without a wakeup. Off (0) by default.
  uv_idle_t* idle_ = nullptr;
  uint64_t busy_poll_ns_ = 0;
  uint64_t spin_until_ = 0;
  void Spin();
  static void OnIdle(uv_idle_t* idle);
  std::unique_ptr<Napi::AsyncContext> async_;
  Napi::FunctionReference on_read_;
  Napi::FunctionReference on_writable_;

  SlabTable slabs_;
  ReadRing ring_;
  SendTable table_;

  std::vector<struct mmsghdr> rx_msgs_;
  std::vector<struct iovec> rx_iovs_;
  std::vector<struct sockaddr_storage> rx_names_;
  std::vector<uint8_t> rx_control_;
  std::vector<struct mmsghdr> tx_msgs_;
  std::vector<struct iovec> tx_iovs_;
  std::vector<struct sockaddr_storage> tx_names_;
  std::vector<uint8_t> tx_control_;
  std::vector<size_t> tx_ends_;      // per message built: the descriptor after its last
  std::vector<uint32_t> tx_segments_;  // per message built: the datagrams it carries (GSO)
  std::vector<uint8_t> netlink_buffer_;

  // Counters, read by stats().
  double read_calls_ = 0;
  double packets_read_ = 0;
  double read_errors_ = 0;
  double truncated_ = 0;
  double packets_sent_ = 0;
  double send_errors_ = 0;
  double send_again_ = 0;
  double bad_descriptors_ = 0;
  int last_read_errno_ = 0;
  int last_send_errno_ = 0;
};

}  // namespace weft
