// Configuring one network interface the way `ip link`/`ip addr`/`ip route` would, through
// ioctls on a throwaway socket in the interface's namespace (and IPv6's sysctl for
// disableIpv6). Every argument is read and checked before the namespace is entered.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/ipv6.h>
#include <linux/ipv6_route.h>
#include <linux/route.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "args.h"
#include "errors.h"
#include "exports.h"

namespace weft {

namespace {

struct IfSocket {
  int fd;
  explicit IfSocket(int family) : fd(socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {}
  ~IfSocket() {
    if (fd >= 0) close(fd);
  }
};

enum class Op {
  kIndex,
  kGetMtu,
  kSetMtu,
  kGetFlags,
  kSetUp,
  kSetMac,
  kGetMac,
  kAddIpv4,
  kAddIpv6,
  kAddRoute4,
  kAddRoute6,
  kDisableIpv6,
};

struct OpName {
  const char* name;
  Op op;
};
const OpName kOps[] = {
    {"index", Op::kIndex},         {"getMtu", Op::kGetMtu},       {"setMtu", Op::kSetMtu},
    {"getFlags", Op::kGetFlags},   {"setUp", Op::kSetUp},         {"setMac", Op::kSetMac},
    {"getMac", Op::kGetMac},       {"addIpv4", Op::kAddIpv4},     {"addIpv6", Op::kAddIpv6},
    {"addRoute4", Op::kAddRoute4}, {"addRoute6", Op::kAddRoute6}, {"disableIpv6", Op::kDisableIpv6},
};

// The kernel's dev_valid_name: 1 to 15 bytes, not . or .., no slash, colon or white space.
bool ValidName(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == "..") return false;
  for (char c : name) {
    if (c == '/' || c == ':' || c == ' ' || (c >= '\t' && c <= '\r')) return false;
  }
  return true;
}

// [address: Uint8Array(`bytes`), prefixLength 0..8*bytes]
bool ReadPrefix(Napi::Env env, Napi::Value pair, const std::string& op, size_t bytes, uint8_t* addr, int32_t* prefix) {
  Napi::Value a;
  Napi::Value p;
  std::string what = op + " value";
  std::string address = what + "[0] (the address)";
  std::string length = what + "[1] (the prefix length)";
  return ReadElement(env, pair, what.c_str(), 0, &a) && ReadBytes(env, a, address.c_str(), bytes, addr) &&
         ReadElement(env, pair, what.c_str(), 1, &p) &&
         ReadInt32(env, p, length.c_str(), 0, static_cast<int32_t>(bytes * 8), prefix);
}

uint32_t Netmask(int32_t prefix) { return prefix == 0 ? 0 : htonl(0xffffffffu << (32 - prefix)); }

}  // namespace

// ifconfig(name, op, value?, netns?): op is one of
//   "index" -> ifindex; "getMtu" -> mtu; "setMtu" (value); "getFlags" -> flags; "setUp" (bool);
//   "setMac" (Uint8Array 6); "getMac" -> Buffer 6; "addIpv4" ([Uint8Array 4, prefixLength]);
//   "addIpv6" ([Uint8Array 16, prefixLength]); "addRoute4" / "addRoute6" ([address, prefixLength]);
//   "disableIpv6" (bool: net.ipv6.conf.<name>.disable_ipv6)
Napi::Value IfconfigJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  std::string op_name;
  std::string netns;
  if (!ArgString(info, 0, "interface name", 64, &name) || !ArgString(info, 1, "op", 64, &op_name) ||
      !ArgOptionalString(info, 3, "netns", kMaxPathBytes, &netns)) {
    return env.Undefined();
  }
  if (!ValidName(name)) {
    ThrowRange(env, "interface name must be 1 to 15 bytes without white space, '/' or ':'");
    return env.Undefined();
  }
  const OpName* found = nullptr;
  for (const auto& o : kOps) {
    if (op_name == o.name) found = &o;
  }
  if (found == nullptr) {
    ThrowRange(env, "unknown ifconfig op " + op_name);
    return env.Undefined();
  }
  const Op op = found->op;
  Napi::Value value = info[2];
  int32_t mtu = 0;
  bool flag = false;
  uint8_t bytes[16];
  int32_t prefix = 0;
  bool ok = true;
  switch (op) {
    case Op::kSetMtu:
      ok = ReadInt32(env, value, "setMtu value", 0, INT32_MAX, &mtu);
      break;
    case Op::kSetUp:
    case Op::kDisableIpv6:
      ok = ReadBool(env, value, (op_name + " value").c_str(), &flag);
      break;
    case Op::kSetMac:
      ok = ReadBytes(env, value, "setMac value", 6, bytes);
      break;
    case Op::kAddIpv4:
    case Op::kAddRoute4:
      ok = ReadPrefix(env, value, op_name, 4, bytes, &prefix);
      break;
    case Op::kAddIpv6:
    case Op::kAddRoute6:
      ok = ReadPrefix(env, value, op_name, 16, bytes, &prefix);
      break;
    default:
      break;
  }
  if (!ok) return env.Undefined();

  WEFT_ENTER_NETNS(env, netns);
  if (op == Op::kDisableIpv6) {
    // The net.* keys under /proc/sys are those of the namespace the file is opened in.
    std::string path = "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6";
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return ThrowErrno(env, errno, "open(" + path + ")");
    ssize_t w = write(fd, flag ? "1" : "0", 1);
    int err = errno;
    close(fd);
    if (w < 0) return ThrowErrno(env, err, "write(" + path + ")");
    return env.Undefined();
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name.data(), name.size());
  IfSocket s(op == Op::kAddIpv6 || op == Op::kAddRoute6 ? AF_INET6 : AF_INET);
  if (s.fd < 0) return ThrowErrno(env, errno, "socket");
  switch (op) {
    case Op::kIndex:
      if (ioctl(s.fd, SIOCGIFINDEX, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFINDEX)");
      return Napi::Number::New(env, ifr.ifr_ifindex);
    case Op::kGetMtu:
      if (ioctl(s.fd, SIOCGIFMTU, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFMTU)");
      return Napi::Number::New(env, ifr.ifr_mtu);
    case Op::kSetMtu:
      ifr.ifr_mtu = mtu;
      if (ioctl(s.fd, SIOCSIFMTU, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFMTU)");
      return env.Undefined();
    case Op::kGetFlags:
      if (ioctl(s.fd, SIOCGIFFLAGS, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFFLAGS)");
      return Napi::Number::New(env, ifr.ifr_flags & 0xffff);
    case Op::kSetUp:
      if (ioctl(s.fd, SIOCGIFFLAGS, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFFLAGS)");
      if (flag) ifr.ifr_flags |= IFF_UP;
      else ifr.ifr_flags &= ~IFF_UP;
      if (ioctl(s.fd, SIOCSIFFLAGS, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFFLAGS)");
      return env.Undefined();
    case Op::kSetMac:
      ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
      memcpy(ifr.ifr_hwaddr.sa_data, bytes, 6);
      if (ioctl(s.fd, SIOCSIFHWADDR, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFHWADDR)");
      return env.Undefined();
    case Op::kGetMac:
      if (ioctl(s.fd, SIOCGIFHWADDR, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFHWADDR)");
      return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t*>(ifr.ifr_hwaddr.sa_data), 6);
    case Op::kAddIpv4: {
      auto* sin = reinterpret_cast<struct sockaddr_in*>(&ifr.ifr_addr);
      sin->sin_family = AF_INET;
      memcpy(&sin->sin_addr, bytes, 4);
      if (ioctl(s.fd, SIOCSIFADDR, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFADDR)");
      sin = reinterpret_cast<struct sockaddr_in*>(&ifr.ifr_netmask);
      sin->sin_family = AF_INET;
      sin->sin_addr.s_addr = Netmask(prefix);
      if (ioctl(s.fd, SIOCSIFNETMASK, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFNETMASK)");
      return env.Undefined();
    }
    case Op::kAddIpv6: {
      if (ioctl(s.fd, SIOCGIFINDEX, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFINDEX)");
      struct in6_ifreq req;
      memset(&req, 0, sizeof(req));
      memcpy(&req.ifr6_addr, bytes, 16);
      req.ifr6_prefixlen = static_cast<uint32_t>(prefix);
      req.ifr6_ifindex = ifr.ifr_ifindex;
      if (ioctl(s.fd, SIOCSIFADDR, &req) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFADDR, IPv6)");
      return env.Undefined();
    }
    case Op::kAddRoute4: {
      // A route to [address, prefixLength] out of this device, as `ip route add X dev NAME`.
      struct rtentry rt;
      memset(&rt, 0, sizeof(rt));
      auto* dst = reinterpret_cast<struct sockaddr_in*>(&rt.rt_dst);
      dst->sin_family = AF_INET;
      memcpy(&dst->sin_addr, bytes, 4);
      auto* mask = reinterpret_cast<struct sockaddr_in*>(&rt.rt_genmask);
      mask->sin_family = AF_INET;
      mask->sin_addr.s_addr = Netmask(prefix);
      rt.rt_flags = RTF_UP | (prefix == 32 ? RTF_HOST : 0);
      char dev[IFNAMSIZ];
      memcpy(dev, ifr.ifr_name, IFNAMSIZ);
      rt.rt_dev = dev;
      if (ioctl(s.fd, SIOCADDRT, &rt) != 0) return ThrowErrno(env, errno, "ioctl(SIOCADDRT)");
      return env.Undefined();
    }
    case Op::kAddRoute6: {
      if (ioctl(s.fd, SIOCGIFINDEX, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFINDEX)");
      struct in6_rtmsg rt;
      memset(&rt, 0, sizeof(rt));
      memcpy(&rt.rtmsg_dst, bytes, 16);
      rt.rtmsg_dst_len = static_cast<uint16_t>(prefix);
      rt.rtmsg_flags = RTF_UP;
      rt.rtmsg_metric = 1;
      rt.rtmsg_ifindex = ifr.ifr_ifindex;
      if (ioctl(s.fd, SIOCADDRT, &rt) != 0) return ThrowErrno(env, errno, "ioctl(SIOCADDRT, IPv6)");
      return env.Undefined();
    }
    case Op::kDisableIpv6:
      break;
  }
  return env.Undefined();
}

}  // namespace weft
