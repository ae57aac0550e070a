internal import CProcess

/// What `vfio-migrate --version` prints: the release and the commit it was built from.
enum BuildInfo {
    /// The package version (scripts/package-deb names the .deb after it).
    static let version = "0.1.0"
    /// `unknown` unless the build linked the commit in (scripts/package-deb does).
    static let commit = String(cString: cprocess_git_commit())
    static let versionLine = "vfio-migrate \(version) (commit \(commit))"
}
