// Lets one prebuilt addon load on older Linux systems (glibc 2.28 and GCC 8's libstdc++: RHEL 8,
// Debian 11, Ubuntu 20.04) as well as newer. Two symbols the toolchain would otherwise bind to
// versions those lack are defined here, hidden, so the addon's own calls resolve to them:
// - fstat64: glibc 2.33 turned it from an inline wrapper into a versioned symbol (GLIBC_2.33);
//   here it is the system call glibc makes, where the kernel's struct stat is glibc's stat64
//   (64-bit x86 and ARM).
// - std::__throw_bad_array_new_length: GCC 11's `new T[n]` calls it (GLIBCXX_3.4.29); with C++
//   exceptions uncaught in the addon, it ends the process either way, as GCC's does.
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <new>

#if defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
extern "C" __attribute__((visibility("hidden"))) int fstat64(int fd, struct stat64* buf) noexcept {
  return static_cast<int>(syscall(SYS_fstat, fd, buf));
}
#endif

#if defined(__GLIBCXX__) && defined(__GNUC__) && __GNUC__ >= 11
namespace std {
__attribute__((visibility("hidden"))) void __throw_bad_array_new_length() {
  throw std::bad_array_new_length();
}
}  // namespace std
#endif
