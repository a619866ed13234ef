{
  "targets": [
    {
      "target_name": "weft_tun",
      "sources": [
        "native/addon.cc",
        "native/args.cc",
        "native/crypto.cc",
        "native/errors.cc",
        "native/handle.cc",
        "native/ifconfig.cc",
        "native/netlink_io.cc",
        "native/open.cc",
        "native/options.cc",
        "native/slab.cc",
        "native/syscalls.cc",
        "native/tun_io.cc",
        "native/udp_io.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
