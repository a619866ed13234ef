// Netlink socket I/O: whole datagrams, copied into a fresh Buffer each (not a hot path).
#include <errno.h>
#include <linux/netlink.h>
#include <string.h>
#include <sys/socket.h>

#include "args.h"
#include "errors.h"
#include "handle.h"

namespace weft {

void Handle::ReadNetlink() {
  Napi::Env env = Env();
  while (!closed_ && reading_ && !paused_) {
    ssize_t r = recv(fd_, netlink_buffer_.data(), netlink_buffer_.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        // ENOBUFS: the kernel dropped messages for us; JS must resynchronise, so tell it.
        read_errors_++;
        last_read_errno_ = errno;
        Deliver(on_read_, {Napi::Number::New(env, -errno)});
      }
      return;
    }
    if (static_cast<size_t>(r) > netlink_buffer_.size()) {
      truncated_++;
      Deliver(on_read_, {Napi::Number::New(env, -EMSGSIZE)});
      continue;
    }
    packets_read_++;
    Napi::HandleScope scope(env);
    Deliver(on_read_, {Napi::Buffer<uint8_t>::Copy(env, netlink_buffer_.data(), static_cast<size_t>(r))});
  }
}

// sendBuffer(buffer): one datagram to the kernel (netlink) and the number of bytes sent.
Napi::Value Handle::SendBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* data = nullptr;
  size_t length = 0;
  if (!ArgByteView(info, 0, "message", 0, 1 << 30, &data, &length)) return env.Undefined();
  if (kind_ != Kind::kNetlink) {
    ThrowType(env, "sendBuffer is for netlink handles: use setSendTable and send");
    return env.Undefined();
  }
  if (closed_) return ThrowErrno(env, EBADF, "sendto");
  struct sockaddr_nl kernel;
  memset(&kernel, 0, sizeof(kernel));
  kernel.nl_family = AF_NETLINK;
  ssize_t r;
  do {
    r = sendto(fd_, data, length, 0, reinterpret_cast<struct sockaddr*>(&kernel), sizeof(kernel));
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowErrno(env, errno, "sendto");
  return Napi::Number::New(env, static_cast<double>(r));
}

}  // namespace weft
