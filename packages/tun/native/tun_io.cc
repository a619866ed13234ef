// TUN/TAP queue I/O: one packet per read() or write() (writev() for a packet in pieces), into and
// out of checked slab ranges.
#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#include "handle.h"

namespace weft {

namespace {
// The longest read a TUN/TAP queue can return: a virtio_net_hdr (12 bytes at most), an Ethernet
// header with a VLAN tag, and a 64 KiB packet. A slot with more room cannot be cut.
constexpr size_t kLongestRead = 12 + 18 + 65535;
}  // namespace

int Handle::ReadTun(const SlabRange& ring) {
  int32_t* lengths = ring_.lengths.As<int32_t>();
  const size_t room = ring_.stride - ring_.headroom;
  // A TUN read cuts a packet longer than the buffer without saying so: one spare byte after the
  // slot tells a packet that filled it exactly from one that was cut. A slot no packet can fill
  // needs no spare byte, and a plain read() skips readv's iovec import.
  uint8_t spare;
  struct iovec iov[2];
  iov[1].iov_base = &spare;
  iov[1].iov_len = 1;
  const int iovs = room > kLongestRead ? 1 : 2;
  size_t n = 0;
  int err = 0;
  while (n < ring_.count) {
    SlabRange slot;
    if (!ring.Slice(n * ring_.stride + ring_.headroom, room, &slot)) break;
    iov[0].iov_base = slot.data();
    iov[0].iov_len = slot.size();
    ssize_t r = iovs == 1 ? read(fd_, iov[0].iov_base, iov[0].iov_len) : readv(fd_, iov, 2);
    if (r < 0) {
      if (errno == EINTR) continue;
      // Anything but "nothing more now" ends a TUN queue: EBADFD is its device deleted.
      if (errno != EAGAIN && errno != EWOULDBLOCK) err = errno;
      break;
    }
    if (static_cast<size_t>(r) > room) {
      truncated_++;
      lengths[n++] = -1;
    } else {
      lengths[n++] = static_cast<int32_t>(r);
    }
  }
  if (n > 0) {
    packets_read_ += static_cast<double>(n);
    Deliver(on_read_, {Napi::Number::New(Env(), static_cast<double>(n))});
  }
  return err;
}

size_t Handle::SendTun(size_t start, size_t count) {
  napi_env env = Env();
  size_t i = start;
  const size_t end = start + count;
  while (i < end) {
    size_t pieces = 0;
    struct iovec* iov = tx_iovs_.data();
    bool ok = GatherPacket(env, i, end, iov, &pieces);
    size_t bytes = 0;
    for (size_t k = 0; ok && k < pieces; k++) bytes += iov[k].iov_len;
    if (!ok || bytes == 0) {
      bad_descriptors_++;
      i += pieces;
      continue;
    }
    ssize_t w = pieces == 1 ? write(fd_, iov[0].iov_base, iov[0].iov_len) : writev(fd_, iov, static_cast<int>(pieces));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        send_again_++;
        break;
      }
      send_errors_++;
      last_send_errno_ = errno;
      // The device is gone. A reader hears it from the poll; a queue that only writes ends here.
      if (errno == EBADFD && !reading_) {
        Fail(EBADFD, false);
        send_errors_ += static_cast<double>(end - i - pieces);
        return count;
      }
    } else {
      packets_sent_++;
    }
    i += pieces;
  }
  return i - start;
}

}  // namespace weft
