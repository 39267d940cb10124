"""whole_shared_library: lib<name>.so holding every dep whole.

Bazel 4's cc_binary(linkshared = True) links its deps as lazy archives
(--start-lib or plain .a), so a library with no sources of its own comes
out empty; and cc_shared_library needs an experimental flag. This rule
relinks the deps' PIC archives as always-link (--whole-archive), with the
deps' own link flags (the Debian libraries, -l...), through the C++
toolchain.
"""

load("@bazel_tools//tools/cpp:toolchain_utils.bzl", "find_cpp_toolchain")

def _impl(ctx):
    cc_toolchain = find_cpp_toolchain(ctx)
    feature_configuration = cc_common.configure_features(
        ctx = ctx,
        cc_toolchain = cc_toolchain,
        requested_features = ctx.features,
        unsupported_features = ctx.disabled_features + ["supports_start_end_lib"],
    )
    libraries = []
    flags = []
    seen = {}
    for dep in ctx.attr.deps:
        for linker_input in dep[CcInfo].linking_context.linker_inputs.to_list():
            flags.extend(linker_input.user_link_flags)
            for library in linker_input.libraries:
                archive = library.pic_static_library or library.static_library
                if archive == None or archive.path in seen:
                    continue
                seen[archive.path] = True
                libraries.append(cc_common.create_library_to_link(
                    actions = ctx.actions,
                    feature_configuration = feature_configuration,
                    cc_toolchain = cc_toolchain,
                    pic_static_library = archive,
                    alwayslink = True,
                ))
    linking_context = cc_common.create_linking_context(
        linker_inputs = depset([cc_common.create_linker_input(
            owner = ctx.label,
            libraries = depset(libraries),
            user_link_flags = depset(flags),
        )]),
    )
    output = cc_common.link(
        actions = ctx.actions,
        feature_configuration = feature_configuration,
        cc_toolchain = cc_toolchain,
        linking_contexts = [linking_context],
        name = ctx.label.name,
        output_type = "dynamic_library",
        user_link_flags = ["-Wl,-soname,lib%s.so" % ctx.label.name] + ctx.attr.linkopts,
    )
    library = output.library_to_link.resolved_symlink_dynamic_library or \
              output.library_to_link.dynamic_library
    return [DefaultInfo(files = depset([library]))]

whole_shared_library = rule(
    implementation = _impl,
    attrs = {
        "deps": attr.label_list(providers = [CcInfo]),
        "linkopts": attr.string_list(),
        "_cc_toolchain": attr.label(
            default = Label("@bazel_tools//tools/cpp:current_cc_toolchain"),
        ),
    },
    toolchains = ["@bazel_tools//tools/cpp:toolchain_type"],
    fragments = ["cpp"],
)
