// Opening the fds a Handle then owns: a TUN/TAP queue, a UDP socket, a netlink socket, each
// optionally in another network namespace. Every argument is read and checked before the
// namespace is entered: nothing calls back into JS from inside another namespace.
#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <string>

#include "args.h"
#include "errors.h"
#include "exports.h"
#include "syscalls.h"

namespace weft {

namespace {

// The open flags weft uses; anything else is refused rather than handed to the kernel.
constexpr int kTunFlags = IFF_TUN | IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_VNET_HDR;

}  // namespace

// openTun(devicePath, name, flags, netns?) -> { fd, name }
Napi::Value OpenTunJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string device;
  std::string name;
  int32_t flags = 0;
  std::string netns;
  if (!ArgString(info, 0, "device path", kMaxPathBytes, &device) ||
      !ArgString(info, 1, "device name", IFNAMSIZ - 1, &name) || !ArgInt32(info, 2, "flags", 0, 0xffff, &flags) ||
      !ArgOptionalString(info, 3, "netns", kMaxPathBytes, &netns)) {
    return env.Undefined();
  }
  if (device.empty() || name.empty()) {
    ThrowRange(env, "openTun: the device path and the name must not be empty");
    return env.Undefined();
  }
  if ((flags & ~kTunFlags) != 0 || ((flags & IFF_TUN) != 0) == ((flags & IFF_TAP) != 0)) {
    ThrowRange(env, "openTun: flags must be IFF_TUN or IFF_TAP, with IFF_NO_PI, IFF_MULTI_QUEUE or IFF_VNET_HDR");
    return env.Undefined();
  }
  WEFT_ENTER_NETNS(env, netns);
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
  int32_t family = 0;
  uint8_t addr[16];
  int32_t port = 0;
  bool reuse = false;
  std::string netns;
  if (!ArgInt32(info, 0, "family", 4, 6, &family)) return env.Undefined();
  if (family != 4 && family != 6) {
    ThrowRange(env, "family must be 4 or 6");
    return env.Undefined();
  }
  if (!ArgBytes(info, 1, "address", family == 4 ? 4 : 16, addr) || !ArgInt32(info, 2, "port", 0, 65535, &port) ||
      !ArgBool(info, 3, "reusePort", &reuse) || !ArgOptionalString(info, 4, "netns", kMaxPathBytes, &netns)) {
    return env.Undefined();
  }
  WEFT_ENTER_NETNS(env, netns);
  const char* step = "";
  int af = family == 4 ? AF_INET : AF_INET6;
  int fd = OpenUdp(af, addr, port, reuse, &step);
  if (fd < 0) return ThrowErrno(env, -fd, step);
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&ss), &len);
  int bound = af == AF_INET ? ntohs(reinterpret_cast<struct sockaddr_in*>(&ss)->sin_port)
                            : ntohs(reinterpret_cast<struct sockaddr_in6*>(&ss)->sin6_port);
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", fd);
  out.Set("port", bound);
  return out;
}

// openNetlink(protocol, groups, netns?) -> { fd, portId }
Napi::Value OpenNetlinkJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t protocol = 0;
  int64_t groups = 0;
  std::string netns;
  // MAX_LINKS: netlink families are 0 to 31.
  if (!ArgInt32(info, 0, "protocol", 0, 31, &protocol) || !ArgInt(info, 1, "groups", 0, UINT32_MAX, &groups) ||
      !ArgOptionalString(info, 2, "netns", kMaxPathBytes, &netns)) {
    return env.Undefined();
  }
  WEFT_ENTER_NETNS(env, netns);
  const char* step = "";
  int fd = OpenNetlink(protocol, static_cast<uint32_t>(groups), &step);
  if (fd < 0) return ThrowErrno(env, -fd, step);
  struct sockaddr_nl sa;
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len);
  Napi::Object out = Napi::Object::New(env);
  out.Set("fd", fd);
  out.Set("portId", static_cast<double>(sa.nl_pid));
  return out;
}

}  // namespace weft
