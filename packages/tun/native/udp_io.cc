// UDP socket I/O: recvmmsg into the ring's slots (with the source and the GRO segment size from
// a control message), sendmmsg from runs of valid datagrams, each an iovec of one or more
// descriptors (with a UDP_SEGMENT control message for GSO).
#include <arpa/inet.h>
#include <errno.h>
#include <linux/udp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/uio.h>

#include "handle.h"

#ifndef SOL_UDP
#define SOL_UDP 17
#endif

namespace weft {

namespace {
constexpr size_t kRxControl = CMSG_SPACE(sizeof(int));
constexpr size_t kTxControl = CMSG_SPACE(sizeof(uint16_t));
}  // namespace

void Handle::ResizeUdpVectors() {
  rx_msgs_.assign(ring_.count, {});
  rx_iovs_.assign(ring_.count, {});
  rx_names_.assign(ring_.count, {});
  rx_control_.assign(ring_.count * kRxControl, 0);
}

int Handle::ReadUdp(const SlabRange& ring) {
  const size_t count = ring_.count;
  const size_t room = ring_.stride - ring_.headroom;
  const bool want_gso = ring_.gso.pinned();
  for (size_t i = 0; i < count; i++) {
    SlabRange slot;
    if (!ring.Slice(i * ring_.stride + ring_.headroom, room, &slot)) return 0;
    rx_iovs_[i].iov_base = slot.data();
    rx_iovs_[i].iov_len = slot.size();
    struct msghdr& h = rx_msgs_[i].msg_hdr;
    h.msg_iov = &rx_iovs_[i];
    h.msg_iovlen = 1;
    h.msg_name = &rx_names_[i];
    h.msg_namelen = sizeof(struct sockaddr_storage);
    h.msg_control = want_gso ? &rx_control_[i * kRxControl] : nullptr;
    h.msg_controllen = want_gso ? kRxControl : 0;
    h.msg_flags = 0;
  }
  int n;
  do {
    n = recvmmsg(fd_, rx_msgs_.data(), static_cast<unsigned int>(count), MSG_DONTWAIT, nullptr);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    // A socket error (e.g. a refused earlier send) is the socket's news, not its end: count it.
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      read_errors_++;
      last_read_errno_ = errno;
    }
    return 0;
  }
  int32_t* lengths = ring_.lengths.As<int32_t>();
  uint32_t* addrs = ring_.addrs.pinned() ? ring_.addrs.As<uint32_t>() : nullptr;
  uint16_t* ports = ring_.ports.pinned() ? ring_.ports.As<uint16_t>() : nullptr;
  uint8_t* families = ring_.families.pinned() ? ring_.families.As<uint8_t>() : nullptr;
  uint16_t* gso = want_gso ? ring_.gso.As<uint16_t>() : nullptr;
  for (int i = 0; i < n; i++) {
    struct msghdr& h = rx_msgs_[i].msg_hdr;
    // A datagram longer than the slot was cut: say so with -1 rather than hand over a stub.
    if (h.msg_flags & MSG_TRUNC) {
      truncated_++;
      lengths[i] = -1;
    } else {
      lengths[i] = static_cast<int32_t>(rx_msgs_[i].msg_len);
    }
    const auto* name = reinterpret_cast<const struct sockaddr*>(&rx_names_[i]);
    uint16_t port = 0;
    if (name->sa_family == AF_INET) {
      const auto* sin = reinterpret_cast<const struct sockaddr_in*>(name);
      port = ntohs(sin->sin_port);
      if (addrs != nullptr) {
        uint32_t* a = addrs + static_cast<size_t>(i) * 4;
        a[0] = ntohl(sin->sin_addr.s_addr);
        a[1] = a[2] = a[3] = 0;
      }
      if (families != nullptr) families[i] = 4;
    } else {
      const auto* sin6 = reinterpret_cast<const struct sockaddr_in6*>(name);
      port = ntohs(sin6->sin6_port);
      if (addrs != nullptr) {
        uint32_t* a = addrs + static_cast<size_t>(i) * 4;
        const uint8_t* b = sin6->sin6_addr.s6_addr;
        for (int w = 0; w < 4; w++) {
          a[w] = (static_cast<uint32_t>(b[w * 4]) << 24) | (b[w * 4 + 1] << 16) | (b[w * 4 + 2] << 8) | b[w * 4 + 3];
        }
      }
      if (families != nullptr) families[i] = 6;
    }
    if (ports != nullptr) ports[i] = port;
    if (gso != nullptr) {
      gso[i] = 0;
      for (struct cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int size;
          memcpy(&size, CMSG_DATA(c), sizeof(size));
          gso[i] = static_cast<uint16_t>(size);
        }
      }
    }
  }
  packets_read_ += n;
  Deliver(on_read_, {Napi::Number::New(Env(), n)});
  return 0;
}

size_t Handle::SendUdp(size_t start, size_t count) {
  napi_env env = Env();
  const uint32_t* addrs = table_.addrs.As<uint32_t>();
  const uint16_t* ports = table_.ports.As<uint16_t>();
  const uint16_t* gso = table_.gso.pinned() ? table_.gso.As<uint16_t>() : nullptr;
  size_t i = start;
  const size_t end = start + count;
  while (i < end) {
    // Build a run of valid datagrams; a bad one is counted and skipped between runs.
    size_t built = 0;
    size_t iovs = 0;
    size_t j = i;
    while (j < end) {
      size_t pieces = 0;
      if (!GatherPacket(env, j, end, &tx_iovs_[iovs], &pieces)) {
        if (built == 0) {
          bad_descriptors_++;
          j += pieces;
          i = j;
          continue;
        }
        break;
      }
      struct msghdr& h = tx_msgs_[built].msg_hdr;
      memset(&h, 0, sizeof(h));
      h.msg_iov = &tx_iovs_[iovs];
      h.msg_iovlen = pieces;
      iovs += pieces;
      const uint32_t* a = addrs + j * 4;
      if (kind_ == Kind::kUdp4) {
        auto* sin = reinterpret_cast<struct sockaddr_in*>(&tx_names_[built]);
        memset(sin, 0, sizeof(*sin));
        sin->sin_family = AF_INET;
        sin->sin_port = htons(ports[j]);
        sin->sin_addr.s_addr = htonl(a[0]);
        h.msg_namelen = sizeof(struct sockaddr_in);
      } else {
        auto* sin6 = reinterpret_cast<struct sockaddr_in6*>(&tx_names_[built]);
        memset(sin6, 0, sizeof(*sin6));
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(ports[j]);
        for (int w = 0; w < 4; w++) {
          sin6->sin6_addr.s6_addr[w * 4] = a[w] >> 24;
          sin6->sin6_addr.s6_addr[w * 4 + 1] = (a[w] >> 16) & 0xff;
          sin6->sin6_addr.s6_addr[w * 4 + 2] = (a[w] >> 8) & 0xff;
          sin6->sin6_addr.s6_addr[w * 4 + 3] = a[w] & 0xff;
        }
        h.msg_namelen = sizeof(struct sockaddr_in6);
      }
      h.msg_name = &tx_names_[built];
      tx_segments_[built] = 1;
      if (gso != nullptr && gso[j] > 0) {
        size_t bytes = 0;
        for (size_t k = 0; k < pieces; k++) bytes += h.msg_iov[k].iov_len;
        tx_segments_[built] = static_cast<uint32_t>(bytes > gso[j] ? (bytes + gso[j] - 1) / gso[j] : 1);
        uint8_t* control = &tx_control_[built * kTxControl];
        h.msg_control = control;
        h.msg_controllen = kTxControl;
        struct cmsghdr* c = CMSG_FIRSTHDR(&h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size = gso[j];
        memcpy(CMSG_DATA(c), &size, sizeof(size));
      }
      j += pieces;
      tx_ends_[built++] = j;
    }
    if (built == 0) continue;
    size_t done = 0;
    while (done < built) {
      int r = sendmmsg(fd_, tx_msgs_.data() + done, static_cast<unsigned int>(built - done), MSG_DONTWAIT);
      if (r > 0) {
        done += static_cast<size_t>(r);
        packets_sent_ += r;
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        send_again_++;
        return (done == 0 ? i : tx_ends_[done - 1]) - start;
      }
      // The first message of the run failed for good (no route, too big, refused): drop it,
      // and count each datagram it carried.
      send_errors_ += tx_segments_[done];
      last_send_errno_ = errno;
      done++;
    }
    i = tx_ends_[built - 1];
  }
  return i - start;
}

}  // namespace weft
