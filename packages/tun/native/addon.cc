// weft's native addon: system calls JavaScript cannot make (TUN/TAP ioctls, recvmmsg/sendmmsg,
// netlink sockets, setns), and the arithmetic over payloads JavaScript is slowest at (AEAD,
// ones' complement sums). Protocols stay in TypeScript. Every export checks its arguments
// (args.h): a wrong call is a TypeError or RangeError, never a crash.
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <napi.h>
#include <netinet/in.h>

#include "checksum.h"
#include "crypto.h"
#include "exports.h"
#include "handle.h"

#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  using namespace weft;
  exports.Set("Handle", Handle::Init(env));
  exports.Set("openTun", Napi::Function::New(env, OpenTunJs, "openTun"));
  exports.Set("openUdp", Napi::Function::New(env, OpenUdpJs, "openUdp"));
  exports.Set("openNetlink", Napi::Function::New(env, OpenNetlinkJs, "openNetlink"));
  exports.Set("ifconfig", Napi::Function::New(env, IfconfigJs, "ifconfig"));
  RegisterCrypto(env, exports);
  RegisterChecksum(env, exports);
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
  c.Set("IP_PMTUDISC_DONT", IP_PMTUDISC_DONT);
  c.Set("IPV6_PMTUDISC_DO", IPV6_PMTUDISC_DO);
  c.Freeze();
  exports.Set("constants", c);
  return exports;
}

NODE_API_MODULE(weft_tun, InitAddon)
