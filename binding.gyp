{
  # Everything native that plugvisor ships, built by `node-gyp rebuild` into
  # build/Release/ and prebuilt by `npm pack` (scripts/prebuild.js) into
  # prebuilds/linux-x64/ with the same layout: the addon, the two sandbox
  # helpers, and the C client library's install prefix (include/, lib/).
  # They link nothing at run time but libc: libseccomp and libprotobuf-c are
  # linked statically, so the installed package needs no -dev packages.
  "targets": [
    {
      "target_name": "plugvisor",
      "sources": [
        "native/plugvisor.c",
        "native/addon.c",
        "native/layouts.c",
        "native/vcpus.c",
        "native/vcpu/kick.c",
        "native/vcpu/config.c",
        "native/vcpu/conn.c",
        "native/vcpu/loop.c",
        "native/vcpu/set.c",
        "<(INTERMEDIATE_DIR)/plugin.pb-c.c"
      ],
      "include_dirs": ["<(INTERMEDIATE_DIR)"],
      "actions": [
        {
          "action_name": "protoc-c",
          "message": "protoc-c: generating the VCPU protocol code from src/protocol/plugin.proto",
          "inputs": ["src/protocol/plugin.proto"],
          "outputs": ["<(INTERMEDIATE_DIR)/plugin.pb-c.c", "<(INTERMEDIATE_DIR)/plugin.pb-c.h"],
          "action": ["protoc-c", "--proto_path=src/protocol", "--c_out=<(INTERMEDIATE_DIR)", "src/protocol/plugin.proto"]
        }
      ],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-O2", "-pthread", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "libraries": [
        "-pthread",
        "-Wl,--exclude-libs,ALL",
        "-l:libprotobuf-c.a"
      ]
    },
    {
      "target_name": "plugvisor-jail-exec",
      "type": "executable",
      "sources": ["native/seccomp/plugvisor-jail-exec.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"]
    },
    {
      "target_name": "plugvisor-seccomp-compile",
      "type": "executable",
      "sources": ["native/seccomp/plugvisor-seccomp-compile.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O2"],
      "libraries": ["-l:libseccomp.a"]
    },
    {
      # clients/c/Makefile stays the one description of the C library's
      # build; this installs it into build/Release/{include,lib}.
      "target_name": "crosvm_plugin",
      "type": "none",
      "actions": [
        {
          "action_name": "make_crosvm_plugin",
          "inputs": [
            "clients/c/Makefile", "clients/c/include/crosvm.h", "clients/c/src/crosvm.c",
            "clients/c/src/wire.h", "native/protocol/messages.h", "src/protocol/plugin.proto"
          ],
          "outputs": [
            "<(PRODUCT_DIR)/include/crosvm.h",
            "<(PRODUCT_DIR)/lib/libcrosvm_plugin.so",
            "<(PRODUCT_DIR)/lib/pkgconfig/crosvm_plugin.pc"
          ],
          "action": ["make", "-s", "-C", "clients/c", "install", "PREFIX=<(module_root_dir)/build/Release"]
        }
      ]
    }
  ]
}
