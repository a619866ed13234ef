// Socket options and TUN offloads, set on the handle's own fd (never on a number from JS), from
// a fixed list per kind of handle.
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/udp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>

#include <string>

#include "args.h"
#include "errors.h"
#include "handle.h"

#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

namespace weft {

namespace {

enum Kinds : unsigned { kUdp = 1, kNetlink = 2 };

struct SockOpt {
  const char* name;
  int level;
  int option;
  unsigned kinds;
  // The getsockopt that reads a write-only FORCE option back.
  int read_option;
};

const SockOpt kSockOpts[] = {
    {"rcvbuf", SOL_SOCKET, SO_RCVBUF, kUdp | kNetlink, SO_RCVBUF},
    {"sndbuf", SOL_SOCKET, SO_SNDBUF, kUdp | kNetlink, SO_SNDBUF},
    {"rcvbufforce", SOL_SOCKET, SO_RCVBUFFORCE, kUdp | kNetlink, SO_RCVBUF},
    {"sndbufforce", SOL_SOCKET, SO_SNDBUFFORCE, kUdp | kNetlink, SO_SNDBUF},
    {"udpGro", SOL_UDP, UDP_GRO, kUdp, UDP_GRO},
    {"udpSegment", SOL_UDP, UDP_SEGMENT, kUdp, UDP_SEGMENT},
    {"ipMtuDiscover", IPPROTO_IP, IP_MTU_DISCOVER, kUdp, IP_MTU_DISCOVER},
    {"ipv6MtuDiscover", IPPROTO_IPV6, IPV6_MTU_DISCOVER, kUdp, IPV6_MTU_DISCOVER},
    {"netlinkNoEnobufs", SOL_NETLINK, NETLINK_NO_ENOBUFS, kNetlink, NETLINK_NO_ENOBUFS},
    {"netlinkGetStrictChk", SOL_NETLINK, NETLINK_GET_STRICT_CHK, kNetlink, NETLINK_GET_STRICT_CHK},
};

constexpr unsigned kTunOffloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6;

}  // namespace

// The option `name` for this kind of handle, or nullptr with a RangeError pending.
static const SockOpt* FindOption(Napi::Env env, Kind kind, const std::string& name) {
  unsigned mine = kind == Kind::kNetlink ? kNetlink : kind == Kind::kTun ? 0u : kUdp;
  for (const auto& o : kSockOpts) {
    if (name == o.name && (o.kinds & mine) != 0) return &o;
  }
  ThrowRange(env, "unknown socket option " + name + " for this kind of handle");
  return nullptr;
}

// setOption(name, value)
Napi::Value Handle::SetOption(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  int32_t value = 0;
  if (!ArgString(info, 0, "option", 64, &name) || !ArgInt32(info, 1, "value", INT32_MIN, INT32_MAX, &value))
    return env.Undefined();
  const SockOpt* o = FindOption(env, kind_, name);
  if (o == nullptr) return env.Undefined();
  if (closed_) return ThrowErrno(env, EBADF, "setsockopt(" + name + ")");
  if (setsockopt(fd_, o->level, o->option, &value, sizeof(value)) != 0)
    return ThrowErrno(env, errno, "setsockopt(" + name + ")");
  return env.Undefined();
}

// getOption(name) -> value
Napi::Value Handle::GetOption(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!ArgString(info, 0, "option", 64, &name)) return env.Undefined();
  const SockOpt* o = FindOption(env, kind_, name);
  if (o == nullptr) return env.Undefined();
  if (closed_) return ThrowErrno(env, EBADF, "getsockopt(" + name + ")");
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd_, o->level, o->read_option, &value, &len) != 0)
    return ThrowErrno(env, errno, "getsockopt(" + name + ")");
  return Napi::Number::New(env, value);
}

// steerByFlowHash(): every packet the kernel hands a multi-queue TUN/TAP device goes to queue
// (its flow hash % queues), by a two-instruction eBPF program (TUNSETSTEERINGEBPF), instead of
// the default, which moves a flow to whichever queue last wrote one of its packets: with one
// pump per queue, that pulls every flow into one pump. Needs CAP_BPF (or CAP_SYS_ADMIN).
Napi::Value Handle::SteerByFlowHash(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (kind_ != Kind::kTun) {
    ThrowType(env, "steerByFlowHash is for TUN/TAP queues");
    return env.Undefined();
  }
  if (closed_) return ThrowErrno(env, EBADF, "ioctl(TUNSETSTEERINGEBPF)");
  // r0 = skb->hash; return r0
  struct bpf_insn prog[2];
  memset(prog, 0, sizeof(prog));
  prog[0].code = BPF_LDX | BPF_MEM | BPF_W;
  prog[0].dst_reg = BPF_REG_0;
  prog[0].src_reg = BPF_REG_1;
  prog[0].off = offsetof(struct __sk_buff, hash);
  prog[1].code = BPF_JMP | BPF_EXIT;
  static const char kLicense[] = "GPL";
  union bpf_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insns = reinterpret_cast<uint64_t>(prog);
  attr.insn_cnt = 2;
  attr.license = reinterpret_cast<uint64_t>(kLicense);
  int prog_fd = static_cast<int>(syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof(attr)));
  if (prog_fd < 0) return ThrowErrno(env, errno, "bpf(BPF_PROG_LOAD)");
  // The device holds its own reference to the program.
  int rc = ioctl(fd_, TUNSETSTEERINGEBPF, &prog_fd);
  int err = errno;
  close(prog_fd);
  if (rc != 0) return ThrowErrno(env, err, "ioctl(TUNSETSTEERINGEBPF)");
  return env.Undefined();
}

// setOffload(flags): the TUN_F_* offloads the kernel may hand this TUN/TAP queue.
Napi::Value Handle::SetOffload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t flags = 0;
  if (!ArgInt(info, 0, "offload flags", 0, kTunOffloads, &flags)) return env.Undefined();
  if ((static_cast<unsigned>(flags) & ~kTunOffloads) != 0) {
    ThrowRange(env, "offload flags must be TUN_F_* bits");
    return env.Undefined();
  }
  if (kind_ != Kind::kTun) {
    ThrowType(env, "setOffload is for TUN/TAP queues");
    return env.Undefined();
  }
  if (closed_) return ThrowErrno(env, EBADF, "ioctl(TUNSETOFFLOAD)");
  if (ioctl(fd_, TUNSETOFFLOAD, static_cast<unsigned long>(flags)) != 0)
    return ThrowErrno(env, errno, "ioctl(TUNSETOFFLOAD)");
  return env.Undefined();
}

}  // namespace weft
