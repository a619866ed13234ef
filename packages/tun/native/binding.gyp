{
  "targets": [
    {
      "target_name": "weft_tun",
      "sources": [
        "addon.cc",
        "args.cc",
        "checksum.cc",
        "crypto.cc",
        "errors.cc",
        "glibc_compat.cc",
        "handle.cc",
        "ifconfig.cc",
        "netlink_io.cc",
        "open.cc",
        "options.cc",
        "slab.cc",
        "syscalls.cc",
        "tun_io.cc",
        "udp_io.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
