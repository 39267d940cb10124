"""cc_grpc_proto: protoc + grpc_cpp_plugin from Debian, wrapped as a cc_library.

Bazel 4's proto_library/cc_grpc_library need rules fetched from the internet,
so a genrule runs the system protoc instead.
"""

load("@rules_cc//cc:defs.bzl", "cc_library")

def cc_grpc_proto(name, srcs, deps = [], grpc = True, visibility = None):
    """Compiles `srcs` (.proto files of this package) into one cc_library.

    Args:
      name: the cc_library's name.
      srcs: .proto files in this package.
      deps: other cc_grpc_proto targets whose .protos these import.
      grpc: whether to generate service stubs too.
      visibility: of the cc_library.
    """
    pkg = native.package_name()
    outs = []
    hdrs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        hdrs.append(base + ".pb.h")
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc"]
            hdrs.append(base + ".grpc.pb.h")
    proto_deps = [d + "_protos" for d in deps]
    native.filegroup(name = name + "_protos", srcs = srcs + proto_deps, visibility = visibility)
    cmd = "protoc -I. --cpp_out=$(GENDIR) "
    if grpc:
        cmd += "--grpc_out=$(GENDIR) --plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) "
    cmd += " ".join(["%s/%s" % (pkg, s) for s in srcs])
    native.genrule(
        name = name + "_gen",
        srcs = srcs + proto_deps,
        outs = outs,
        cmd = cmd,
    )
    cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = hdrs,
        deps = deps + ["@system//:grpc" if grpc else "@system//:protobuf"],
        visibility = visibility,
    )
