#include "syscalls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace weft {

NetnsGuard::NetnsGuard(const std::string& path) {
  if (path.empty()) return;
  original_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original_ < 0) {
    error = errno;
    return;
  }
  // Non-blocking: a FIFO at `path` must fail in setns, not hang the open.
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (target < 0) {
    error = errno;
    close(original_);
    original_ = -1;
    return;
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    error = errno;
    close(original_);
    original_ = -1;
  }
  close(target);
}

NetnsGuard::~NetnsGuard() {
  if (original_ < 0) return;
  // Staying in the wrong namespace would silently misdirect every later socket: refuse to go on.
  if (setns(original_, CLONE_NEWNET) != 0) {
    fprintf(stderr, "weft: cannot return to the original network namespace: %s\n", strerror(errno));
    abort();
  }
  close(original_);
}

int OpenTun(const std::string& device_path, std::string* name, int flags, const char** step) {
  *step = "open";
  int fd = open(device_path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -errno;
  // Only a character device gets the TUN ioctl (a regular file or a disk would not know it).
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode)) {
    close(fd);
    return -ENODEV;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = static_cast<short>(flags);
  strncpy(ifr.ifr_name, name->c_str(), IFNAMSIZ - 1);
  *step = "ioctl(TUNSETIFF)";
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  *name = ifr.ifr_name;
  return fd;
}

int OpenUdp(int family, const unsigned char* addr, int port, bool reuse_port, const char** step) {
  *step = "socket";
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  *step = "bind";
  int rc;
  if (family == AF_INET) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    memcpy(&sa.sin_addr, addr, 4);
    rc = bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa));
  } else {
    // An IPv6 socket carries only IPv6: IPv4 gets its own socket, so sources are never mapped.
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(static_cast<uint16_t>(port));
    memcpy(&sa.sin6_addr, addr, 16);
    rc = bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa));
  }
  if (rc != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

int OpenNetlink(int protocol, unsigned int groups, const char** step) {
  *step = "socket";
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd < 0) return -errno;
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof(sa));
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = groups;
  *step = "bind";
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  int one = 1;
  // Ask for extended ACKs: the kernel then says which attribute it refused, in words.
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
  return fd;
}

}  // namespace weft
