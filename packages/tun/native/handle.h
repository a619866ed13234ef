// A file descriptor driven by libuv's uv_poll on Node's own loop, with batched reads into
// caller-owned slabs and batched sends from a caller-filled descriptor table. It knows three
// kinds of fd: a TUN/TAP queue (read/write, one packet each), a UDP socket (recvmmsg/sendmmsg)
// and a netlink socket (whole datagrams, copied: not a hot path).
#pragma once

#include <napi.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace weft {

enum class Kind { kTun = 0, kUdp4 = 1, kUdp6 = 2, kNetlink = 3 };

class Handle : public Napi::ObjectWrap<Handle> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit Handle(const Napi::CallbackInfo& info);
  ~Handle() override;

 private:
  struct Slab {
    Napi::ObjectReference ref;
    uint8_t* data = nullptr;
    size_t length = 0;
  };

  // JS methods.
  Napi::Value RegisterSlab(const Napi::CallbackInfo& info);
  Napi::Value SetReadRing(const Napi::CallbackInfo& info);
  Napi::Value SetSendTable(const Napi::CallbackInfo& info);
  Napi::Value StartReading(const Napi::CallbackInfo& info);
  Napi::Value PauseReading(const Napi::CallbackInfo& info);
  Napi::Value ResumeReading(const Napi::CallbackInfo& info);
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value SendBuffer(const Napi::CallbackInfo& info);
  Napi::Value ArmWritable(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value RefHandle(const Napi::CallbackInfo& info);
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);

  static void OnPoll(uv_poll_t* poll, int status, int events);
  void OnReadable();
  void OnWritable();
  void ReadTun();
  void ReadUdp();
  void ReadNetlink();
  int SendTun(int start, int count);
  int SendUdp(int start, int count);
  bool UpdatePoll(Napi::Env env);
  void Deliver(Napi::FunctionReference& callback, const std::initializer_list<napi_value>& args);
  void DoClose();

  int fd_;
  Kind kind_;
  bool closed_ = false;
  bool reading_ = false;
  bool paused_ = false;
  bool writable_armed_ = false;
  bool refed_self_ = false;
  uv_poll_t* poll_ = nullptr;
  int poll_events_ = 0;
  std::unique_ptr<Napi::AsyncContext> async_;
  Napi::FunctionReference on_read_;
  Napi::FunctionReference on_writable_;

  std::vector<Slab> slabs_;

  // The read ring: `count` slots of `stride` bytes in slab `ring_slab_`, data after `headroom`.
  int ring_slab_ = -1;
  int ring_stride_ = 0;
  int ring_headroom_ = 0;
  int ring_count_ = 0;
  Napi::ObjectReference ring_refs_[5];
  int32_t* ring_lengths_ = nullptr;
  uint32_t* ring_addrs_ = nullptr;     // 4 words per slot: an IPv4 source, or IPv6 big-endian
  uint16_t* ring_ports_ = nullptr;
  uint8_t* ring_families_ = nullptr;   // 4 or 6
  uint16_t* ring_gso_ = nullptr;       // UDP GRO segment size, 0 when not coalesced
  std::vector<struct mmsghdr> rx_msgs_;
  std::vector<struct iovec> rx_iovs_;
  std::vector<struct sockaddr_storage> rx_names_;
  std::vector<uint8_t> rx_control_;

  // The send table: descriptor i says slab, absolute offset, length, destination, GSO size.
  int send_capacity_ = 0;
  Napi::ObjectReference send_refs_[6];
  uint8_t* send_slabs_ = nullptr;
  int32_t* send_offsets_ = nullptr;
  int32_t* send_lengths_ = nullptr;
  uint32_t* send_addrs_ = nullptr;
  uint16_t* send_ports_ = nullptr;
  uint16_t* send_gso_ = nullptr;
  std::vector<struct mmsghdr> tx_msgs_;
  std::vector<struct iovec> tx_iovs_;
  std::vector<struct sockaddr_storage> tx_names_;
  std::vector<uint8_t> tx_control_;

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
