{
  "targets": [
    {
      "target_name": "plugvisor",
      "sources": [
        "native/plugvisor.c",
        "native/addon.c",
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
    }
  ]
}
