// weft's native addon: system calls JavaScript cannot make (TUN/TAP ioctls, recvmmsg/sendmmsg,
// netlink sockets, setns), and nothing else. Protocols stay in TypeScript.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_arp.h>
#include <linux/if_tun.h>
#include <linux/ipv6.h>
#include <linux/netlink.h>
#include <linux/route.h>
#include <linux/ipv6_route.h>
#include <linux/udp.h>
#include <napi.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <string>

#include "errors.h"
#include "handle.h"
#include "syscalls.h"

#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

namespace weft {
namespace {

std::string OptionalString(const Napi::Value& v) { return v.IsString() ? v.As<Napi::String>().Utf8Value() : ""; }

#define ENTER_NETNS(env, path)                                        \
  NetnsGuard netns_guard(path);                                       \
  if (netns_guard.error != 0) return ThrowErrno(env, netns_guard.error, "setns(" + (path) + ")")

// openTun(devicePath, name, flags, netns?) -> { fd, name }
Napi::Value OpenTunJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string device = info[0].As<Napi::String>().Utf8Value();
  std::string name = info[1].As<Napi::String>().Utf8Value();
  int flags = info[2].As<Napi::Number>().Int32Value();
  std::string netns = OptionalString(info[3]);
  ENTER_NETNS(env, netns);
  const char* step = "";
  int fd = OpenTun(device, &name, flags, &step);
  if (fd < 0) return ThrowErrno(env, -fd, step);
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", fd);
  out.Set("name", name);
  return out;
}

// openUdp(family 4|6, address: Uint8Array(4|16), port, reusePort, netns?) -> { fd, port }
Napi::Value OpenUdpJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = info[0].As<Napi::Number>().Int32Value() == 6 ? AF_INET6 : AF_INET;
  auto addr = info[1].As<Napi::Uint8Array>();
  int port = info[2].As<Napi::Number>().Int32Value();
  bool reuse = info[3].ToBoolean();
  std::string netns = OptionalString(info[4]);
  if (addr.ByteLength() != (family == AF_INET ? 4u : 16u)) {
    Napi::TypeError::New(env, "openUdp: address length does not match the family").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  ENTER_NETNS(env, netns);
  const char* step = "";
  int fd = OpenUdp(family, addr.Data(), port, reuse, &step);
  if (fd < 0) return ThrowErrno(env, -fd, step);
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len);
  int bound = family == AF_INET ? ntohs(reinterpret_cast<struct sockaddr_in*>(&ss)->sin_port)
                                : ntohs(reinterpret_cast<struct sockaddr_in6*>(&ss)->sin6_port);
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", fd);
  out.Set("port", bound);
  return out;
}

// openNetlink(protocol, groups, netns?) -> { fd, portId }
Napi::Value OpenNetlinkJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int protocol = info[0].As<Napi::Number>().Int32Value();
  uint32_t groups = info[1].As<Napi::Number>().Uint32Value();
  std::string netns = OptionalString(info[2]);
  ENTER_NETNS(env, netns);
  const char* step = "";
  int fd = OpenNetlink(protocol, groups, &step);
  if (fd < 0) return ThrowErrno(env, -fd, step);
  struct sockaddr_nl sa;
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len);
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", fd);
  out.Set("portId", static_cast<double>(sa.nl_pid));
  return out;
}

struct SockOpt {
  const char* name;
  int level;
  int option;
};
const SockOpt kSockOpts[] = {
    {"rcvbuf", SOL_SOCKET, SO_RCVBUF},       {"sndbuf", SOL_SOCKET, SO_SNDBUF},
    {"rcvbufforce", SOL_SOCKET, SO_RCVBUFFORCE}, {"sndbufforce", SOL_SOCKET, SO_SNDBUFFORCE},
    {"udpGro", SOL_UDP, UDP_GRO},             {"udpSegment", SOL_UDP, UDP_SEGMENT},
    {"netlinkNoEnobufs", SOL_NETLINK, NETLINK_NO_ENOBUFS},
    {"netlinkGetStrictChk", SOL_NETLINK, NETLINK_GET_STRICT_CHK},
    {"ipMtuDiscover", IPPROTO_IP, IP_MTU_DISCOVER},
    {"ipv6MtuDiscover", IPPROTO_IPV6, IPV6_MTU_DISCOVER},
};

const SockOpt* FindOpt(const std::string& name) {
  for (const auto& o : kSockOpts) {
    if (name == o.name) return &o;
  }
  return nullptr;
}

// setSocketOption(fd, name, value) / getSocketOption(fd, name)
Napi::Value SetSocketOptionJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string name = info[1].As<Napi::String>().Utf8Value();
  int value = info[2].As<Napi::Number>().Int32Value();
  const SockOpt* o = FindOpt(name);
  if (o == nullptr) {
    Napi::TypeError::New(env, "unknown socket option " + name).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (setsockopt(fd, o->level, o->option, &value, sizeof(value)) != 0) return ThrowErrno(env, errno, "setsockopt(" + name + ")");
  return env.Undefined();
}

Napi::Value GetSocketOptionJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string name = info[1].As<Napi::String>().Utf8Value();
  const SockOpt* o = FindOpt(name == "rcvbufforce" ? "rcvbuf" : name == "sndbufforce" ? "sndbuf" : name);
  if (o == nullptr) {
    Napi::TypeError::New(env, "unknown socket option " + name).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, o->level, o->option, &value, &len) != 0) return ThrowErrno(env, errno, "getsockopt(" + name + ")");
  return Napi::Number::New(env, value);
}

// tunIoctl(fd, "offload" | "vnetHdrSize", value)
Napi::Value TunIoctlJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string what = info[1].As<Napi::String>().Utf8Value();
  int value = info[2].As<Napi::Number>().Int32Value();
  if (what == "offload") {
    if (ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(value)) != 0) return ThrowErrno(env, errno, "ioctl(TUNSETOFFLOAD)");
  } else if (what == "vnetHdrSize") {
    if (ioctl(fd, TUNSETVNETHDRSZ, &value) != 0) return ThrowErrno(env, errno, "ioctl(TUNSETVNETHDRSZ)");
  } else {
    Napi::TypeError::New(env, "unknown tun ioctl " + what).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

// Interface ioctls go through a throwaway socket in the interface's namespace.
struct IfSocket {
  int fd;
  explicit IfSocket(int family) : fd(socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {}
  ~IfSocket() {
    if (fd >= 0) close(fd);
  }
};

bool FillName(Napi::Env env, struct ifreq* ifr, const std::string& name) {
  memset(ifr, 0, sizeof(*ifr));
  if (name.empty() || name.size() >= IFNAMSIZ) {
    Napi::RangeError::New(env, "interface name must be 1 to 15 bytes").ThrowAsJavaScriptException();
    return false;
  }
  strncpy(ifr->ifr_name, name.c_str(), IFNAMSIZ - 1);
  return true;
}

// ifconfig(name, op, value?, netns?): op is one of
//   "index" -> ifindex; "getMtu" -> mtu; "setMtu" (value); "getFlags" -> flags; "setUp" (bool);
//   "setMac" (Uint8Array 6); "getMac" -> Uint8Array 6; "addIpv4" ([Uint8Array 4, prefixLength]);
//   "addIpv6" ([Uint8Array 16, prefixLength]); "addRoute4" / "addRoute6" ([address, prefixLength])
Napi::Value IfconfigJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string op = info[1].As<Napi::String>().Utf8Value();
  Napi::Value value = info[2];
  std::string netns = OptionalString(info[3]);
  ENTER_NETNS(env, netns);
  struct ifreq ifr;
  if (!FillName(env, &ifr, name)) return env.Undefined();
  IfSocket s(op == "addIpv6" ? AF_INET6 : AF_INET);
  if (s.fd < 0) return ThrowErrno(env, errno, "socket");
  if (op == "index") {
    if (ioctl(s.fd, SIOCGIFINDEX, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFINDEX)");
    return Napi::Number::New(env, ifr.ifr_ifindex);
  }
  if (op == "getMtu") {
    if (ioctl(s.fd, SIOCGIFMTU, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFMTU)");
    return Napi::Number::New(env, ifr.ifr_mtu);
  }
  if (op == "setMtu") {
    ifr.ifr_mtu = value.As<Napi::Number>().Int32Value();
    if (ioctl(s.fd, SIOCSIFMTU, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFMTU)");
    return env.Undefined();
  }
  if (op == "getFlags") {
    if (ioctl(s.fd, SIOCGIFFLAGS, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFFLAGS)");
    return Napi::Number::New(env, ifr.ifr_flags & 0xffff);
  }
  if (op == "setUp") {
    if (ioctl(s.fd, SIOCGIFFLAGS, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFFLAGS)");
    if (value.ToBoolean()) ifr.ifr_flags |= IFF_UP;
    else ifr.ifr_flags &= ~IFF_UP;
    if (ioctl(s.fd, SIOCSIFFLAGS, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFFLAGS)");
    return env.Undefined();
  }
  if (op == "setMac" || op == "getMac") {
    if (op == "setMac") {
      auto mac = value.As<Napi::Uint8Array>();
      ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
      memcpy(ifr.ifr_hwaddr.sa_data, mac.Data(), 6);
      if (ioctl(s.fd, SIOCSIFHWADDR, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFHWADDR)");
      return env.Undefined();
    }
    if (ioctl(s.fd, SIOCGIFHWADDR, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFHWADDR)");
    return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<uint8_t*>(ifr.ifr_hwaddr.sa_data), 6);
  }
  if (op == "addIpv4") {
    auto pair = value.As<Napi::Array>();
    auto addr = pair.Get(0u).As<Napi::Uint8Array>();
    int prefix = pair.Get(1u).As<Napi::Number>().Int32Value();
    auto* sin = reinterpret_cast<struct sockaddr_in*>(&ifr.ifr_addr);
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, addr.Data(), 4);
    if (ioctl(s.fd, SIOCSIFADDR, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFADDR)");
    sin = reinterpret_cast<struct sockaddr_in*>(&ifr.ifr_netmask);
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(prefix == 0 ? 0 : 0xffffffffu << (32 - prefix));
    if (ioctl(s.fd, SIOCSIFNETMASK, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFNETMASK)");
    return env.Undefined();
  }
  if (op == "addIpv6") {
    auto pair = value.As<Napi::Array>();
    auto addr = pair.Get(0u).As<Napi::Uint8Array>();
    if (ioctl(s.fd, SIOCGIFINDEX, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFINDEX)");
    struct in6_ifreq req;
    memset(&req, 0, sizeof(req));
    memcpy(&req.ifr6_addr, addr.Data(), 16);
    req.ifr6_prefixlen = pair.Get(1u).As<Napi::Number>().Uint32Value();
    req.ifr6_ifindex = ifr.ifr_ifindex;
    if (ioctl(s.fd, SIOCSIFADDR, &req) != 0) return ThrowErrno(env, errno, "ioctl(SIOCSIFADDR, IPv6)");
    return env.Undefined();
  }
  if (op == "addRoute4") {
    // A route to [address, prefixLength] out of this device (SIOCADDRT), as `ip route add X dev NAME`.
    auto pair = value.As<Napi::Array>();
    auto addr = pair.Get(0u).As<Napi::Uint8Array>();
    int prefix = pair.Get(1u).As<Napi::Number>().Int32Value();
    struct rtentry rt;
    memset(&rt, 0, sizeof(rt));
    auto* dst = reinterpret_cast<struct sockaddr_in*>(&rt.rt_dst);
    dst->sin_family = AF_INET;
    memcpy(&dst->sin_addr, addr.Data(), 4);
    auto* mask = reinterpret_cast<struct sockaddr_in*>(&rt.rt_genmask);
    mask->sin_family = AF_INET;
    mask->sin_addr.s_addr = htonl(prefix == 0 ? 0 : 0xffffffffu << (32 - prefix));
    rt.rt_flags = RTF_UP | (prefix == 32 ? RTF_HOST : 0);
    char dev[IFNAMSIZ];
    strncpy(dev, name.c_str(), IFNAMSIZ - 1);
    dev[IFNAMSIZ - 1] = 0;
    rt.rt_dev = dev;
    if (ioctl(s.fd, SIOCADDRT, &rt) != 0) return ThrowErrno(env, errno, "ioctl(SIOCADDRT)");
    return env.Undefined();
  }
  if (op == "addRoute6") {
    auto pair = value.As<Napi::Array>();
    auto addr = pair.Get(0u).As<Napi::Uint8Array>();
    if (ioctl(s.fd, SIOCGIFINDEX, &ifr) != 0) return ThrowErrno(env, errno, "ioctl(SIOCGIFINDEX)");
    IfSocket s6(AF_INET6);
    if (s6.fd < 0) return ThrowErrno(env, errno, "socket");
    struct in6_rtmsg rt;
    memset(&rt, 0, sizeof(rt));
    memcpy(&rt.rtmsg_dst, addr.Data(), 16);
    rt.rtmsg_dst_len = static_cast<uint16_t>(pair.Get(1u).As<Napi::Number>().Uint32Value());
    rt.rtmsg_flags = RTF_UP;
    rt.rtmsg_metric = 1;
    rt.rtmsg_ifindex = ifr.ifr_ifindex;
    if (ioctl(s6.fd, SIOCADDRT, &rt) != 0) return ThrowErrno(env, errno, "ioctl(SIOCADDRT, IPv6)");
    return env.Undefined();
  }
  Napi::TypeError::New(env, "unknown ifconfig op " + op).ThrowAsJavaScriptException();
  return env.Undefined();
}

// sysctl(key, value?, netns?): reads (or writes) /proc/sys/<key> as seen from `netns`; the
// net.* keys under /proc/sys are those of the namespace the file is opened in.
Napi::Value SysctlJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string key = info[0].As<Napi::String>().Utf8Value();
  bool write_it = info[1].IsString();
  std::string netns = OptionalString(info[2]);
  if (key.find("..") != std::string::npos) {
    Napi::TypeError::New(env, "sysctl: bad key").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string path = "/proc/sys/" + key;
  ENTER_NETNS(env, netns);
  int fd = open(path.c_str(), (write_it ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "open(" + path + ")");
  if (write_it) {
    std::string value = info[1].As<Napi::String>().Utf8Value();
    ssize_t w = write(fd, value.data(), value.size());
    int err = errno;
    close(fd);
    if (w < 0) return ThrowErrno(env, err, "write(" + path + ")");
    return env.Undefined();
  }
  char buf[4096];
  ssize_t r = read(fd, buf, sizeof(buf) - 1);
  int err = errno;
  close(fd);
  if (r < 0) return ThrowErrno(env, err, "read(" + path + ")");
  return Napi::String::New(env, std::string(buf, static_cast<size_t>(r)));
}

// closeFd(fd): for descriptors not yet owned by a Handle.
Napi::Value CloseFdJs(const Napi::CallbackInfo& info) {
  close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

}  // namespace
}  // namespace weft

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  using namespace weft;
  exports.Set("Handle", Handle::Init(env));
  exports.Set("openTun", Napi::Function::New(env, OpenTunJs));
  exports.Set("openUdp", Napi::Function::New(env, OpenUdpJs));
  exports.Set("openNetlink", Napi::Function::New(env, OpenNetlinkJs));
  exports.Set("setSocketOption", Napi::Function::New(env, SetSocketOptionJs));
  exports.Set("getSocketOption", Napi::Function::New(env, GetSocketOptionJs));
  exports.Set("tunIoctl", Napi::Function::New(env, TunIoctlJs));
  exports.Set("ifconfig", Napi::Function::New(env, IfconfigJs));
  exports.Set("closeFd", Napi::Function::New(env, CloseFdJs));
  exports.Set("sysctl", Napi::Function::New(env, SysctlJs));
  Napi::Object c = Napi::Object::New(env);
  c.Set("IFF_TUN", IFF_TUN);
  c.Set("IFF_TAP", IFF_TAP);
  c.Set("IFF_NO_PI", IFF_NO_PI);
  c.Set("IFF_MULTI_QUEUE", IFF_MULTI_QUEUE);
  c.Set("IFF_VNET_HDR", IFF_VNET_HDR);
  c.Set("IFF_UP", static_cast<int>(IFF_UP));
  c.Set("IFF_RUNNING", static_cast<int>(IFF_RUNNING));
  c.Set("TUN_F_CSUM", TUN_F_CSUM);
  c.Set("TUN_F_TSO4", TUN_F_TSO4);
  c.Set("TUN_F_TSO6", TUN_F_TSO6);
  c.Set("TUN_F_TSO_ECN", TUN_F_TSO_ECN);
  c.Set("TUN_F_USO4", TUN_F_USO4);
  c.Set("TUN_F_USO6", TUN_F_USO6);
  c.Set("NETLINK_ROUTE", NETLINK_ROUTE);
  c.Set("IP_PMTUDISC_DO", IP_PMTUDISC_DO);
  c.Set("IPV6_PMTUDISC_DO", IPV6_PMTUDISC_DO);
  exports.Set("constants", c);
  return exports;
}

NODE_API_MODULE(weft_tun, InitAddon)
