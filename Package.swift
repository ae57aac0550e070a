// swift-tools-version:6.1
import PackageDescription

// Layers (imports go one way, top to bottom; README.md, "Modules", draws them):
//   vfio-migrate (CLI) -> MigrationControl (the control socket) -> SyncPrimitives
//   vfio-migrate (CLI) -> MigrationEngine -> MigrationTLS, MigrationWire, VFIODevice -> C system libraries
//   VFIODevice, MigrationTLS -> SystemErrno -> SystemPackage (swift-system's `Errno`, the one errno type)
//   vfio-migrate (CLI), vfio-migrate-bench, tests -> VFIOSimulator -> VFIODevice (public API only; the engine never sees it)
//   vfio-migrate, vfio-migrate-bench -> CommandLineSupport -> CProcess
//   vfio-migrate-bench runs the `vfio-migrate` binary; it never imports it.
//   VMMTests -> TestVMM (a VMM running a KVM guest) -> MigrationControl, CKVM; it runs the binary (TestSupport's InheritingChild).
let package = Package(
    name: "vfio-migrate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vfio-migrate", targets: ["vfio-migrate"]),
        .executable(name: "vfio-migrate-bench", targets: ["vfio-migrate-bench"]),
        .library(name: "MigrationEngine", targets: ["MigrationEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // System libraries. Each module map also carries `static inline` shims for
        // the macros Swift cannot import, named after their module: functions
        // `cvfio_`/`copenssl_`/`czlib_`/`cprocess_`, constants `CVFIO_`/`COPENSSL_`/`CZSTD_`.
        .systemLibrary(
            name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),
        .systemLibrary(
            name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),
        // libdeflate: whole-buffer raw DEFLATE, wire-identical to zlib's and about
        // twice as fast both ways on this project's corpus (see docs/PERFORMANCE.md).
        .systemLibrary(
            name: "CLibdeflate", path: "Sources/CLibdeflate", pkgConfig: "libdeflate",
            providers: [.apt(["libdeflate-dev"])]),
        // zstd: a negotiated payload encoding (docs/PROTOCOL.md §9), faster than
        // deflate at a better ratio; raw DEFLATE stays the baseline every peer has.
        .systemLibrary(
            name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        // xxHash: XXH3-128, the device digest version 5 negotiates (docs/PROTOCOL.md §16):
        // an order of magnitude cheaper than SHA-256, which took 12 % of both sides' CPU.
        .systemLibrary(
            name: "CXXHash", path: "Sources/CXXHash", pkgConfig: "libxxhash",
            providers: [.apt(["libxxhash-dev"])]),
        // VFIO ioctl numbers and uAPI structs, re-exported as constants (no library to link).
        .systemLibrary(name: "CVFIO", path: "Sources/CVFIO"),
        // malloc tuning for the executables (mallopt is not in the Glibc module).
        .systemLibrary(name: "CProcess", path: "Sources/CProcess"),

        // The one lock vocabulary (pthread mutex + condition, which ThreadSanitizer sees).
        .target(name: "SyncPrimitives"),
        // swift-system's `Errno` as this project reads and prints it (errno, "ENOENT").
        .target(name: "SystemErrno", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "VFIODevice", dependencies: ["CVFIO", "SystemErrno", .product(name: "SystemPackage", package: "swift-system")]),
        // The strict simulated vendor driver, written against VFIODevice's public API
        // only: proof that MigrationRegion is the whole contract a driver needs.
        .target(name: "VFIOSimulator", dependencies: ["VFIODevice", "SyncPrimitives", "SystemErrno", .product(name: "SystemPackage", package: "swift-system")]),
        .target(name: "MigrationWire", dependencies: ["CZlib", "CLibdeflate", "CZstd", "CXXHash", "COpenSSL"]),
        .target(name: "MigrationTLS", dependencies: ["COpenSSL", "SyncPrimitives", "SystemErrno", .product(name: "SystemPackage", package: "swift-system")]),
        // The control socket a VMM or orchestrator drives a migration through (QMP-shaped JSON lines).
        .target(name: "MigrationControl", dependencies: ["SyncPrimitives"]),
        .target(
            name: "MigrationEngine",
            dependencies: [
                "VFIODevice", "MigrationWire", "MigrationTLS", "SyncPrimitives",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // What both executables share: sizes as operators type them, byte
        // formatting, process tuning (so baselines run under the migrations' allocator).
        .target(
            name: "CommandLineSupport",
            dependencies: ["CProcess", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(
            name: "vfio-migrate",
            dependencies: [
                "MigrationEngine", "MigrationControl", "VFIODevice", "VFIOSimulator", "MigrationWire", "MigrationTLS", "CommandLineSupport", "SyncPrimitives",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The benchmark: corpus, runs of the sibling `vfio-migrate` binary (built
        // alongside), baselines, reports. It never links the CLI; the libraries
        // it imports serve its baselines (TLS layer, deflate) and its corpus.
        .executableTarget(
            name: "vfio-migrate-bench",
            dependencies: [
                "CommandLineSupport", "MigrationEngine", "MigrationTLS", "MigrationWire", "SyncPrimitives", "SystemErrno", "VFIODevice", "VFIOSimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]),

        // Helpers shared by the test targets (PKI, result boxes, a recording region, the
        // built binaries and children that inherit descriptors);
        // a regular target so each test target can depend on it.
        .target(name: "TestSupport", dependencies: ["VFIODevice", "MigrationTLS"], path: "Tests/TestSupport"),
        // The test VMM (issue 15, "prove it with a real guest"): KVM's uAPI, and a VMM
        // that runs a real-mode KVM guest (or, without /dev/kvm, a writer thread)
        // and drives `vfio-migrate send` through descriptors and the control socket.
        .systemLibrary(name: "CKVM", path: "Tests/CKVM"),
        .target(
            name: "TestVMM",
            dependencies: ["CKVM", "MigrationControl", "SyncPrimitives", "SystemErrno", .product(name: "SystemPackage", package: "swift-system")],
            path: "Tests/TestVMM"),

        .testTarget(
            name: "VFIODeviceTests",
            dependencies: ["VFIODevice", "VFIOSimulator", "CVFIO", "TestSupport", "SystemErrno", .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(name: "SyncPrimitivesTests", dependencies: ["SyncPrimitives"]),
        .testTarget(name: "MigrationWireTests", dependencies: ["MigrationWire"]),
        .testTarget(name: "MigrationControlTests", dependencies: ["MigrationControl", "SyncPrimitives"]),
        .testTarget(
            name: "MigrationTLSTests",
            dependencies: ["MigrationTLS", "MigrationWire", "TestSupport", .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(
            name: "MigrationEngineTests",
            dependencies: ["MigrationEngine", "VFIODevice", "VFIOSimulator", "MigrationWire", "MigrationTLS", "TestSupport",
                           .product(name: "SystemPackage", package: "swift-system")]),
        // Argument parsing and validation of the executable, in-process (no child processes).
        .testTarget(name: "CLITests", dependencies: ["vfio-migrate", "MigrationControl", "TestSupport"]),
        // The bench's pure parts in-process: link and namespace commands, QMP parsing, medians, ratios, goals.
        .testTarget(name: "BenchTests", dependencies: ["vfio-migrate-bench"]),
        // Runs the built `vfio-migrate` and `vfio-migrate-bench` binaries; of this package it
        // imports only TestSupport (the binaries' paths, the dev PKI arguments, child processes).
        .testTarget(name: "IntegrationTests", dependencies: ["vfio-migrate", "vfio-migrate-bench", "TestSupport"]),
        // Fault injection and hostile peers: proxies, killed processes, crafted frames.
        .testTarget(
            name: "ReliabilityTests",
            dependencies: ["vfio-migrate", "MigrationEngine", "MigrationControl", "MigrationTLS", "MigrationWire", "VFIODevice", "VFIOSimulator", "TestSupport"]),
        // The KVM guest migrated by the real binary, the test VMM on its control socket.
        .testTarget(name: "VMMTests", dependencies: ["vfio-migrate", "TestVMM", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
