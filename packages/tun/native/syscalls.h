// System calls the addon wraps: opening TUN/TAP devices, UDP and netlink sockets, interface
// ioctls, and entering a network namespace for the duration of one call. No protocol parsing.
#pragma once

#include <string>

namespace weft {

// Enters the network namespace at `path` (e.g. /run/netns/NAME) for this thread until the
// guard is destroyed. An empty path means "stay where we are". Check `error` (an errno) first.
class NetnsGuard {
 public:
  explicit NetnsGuard(const std::string& path);
  ~NetnsGuard();
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;
  int error = 0;

 private:
  int original_ = -1;
};

// Each returns a file descriptor, or -errno. `step` names the failing system call.
int OpenTun(const std::string& device_path, std::string* name, int flags, const char** step);
int OpenUdp(int family, const unsigned char* addr, int port, bool reuse_port, const char** step);
int OpenNetlink(int protocol, unsigned int groups, const char** step);

}  // namespace weft
