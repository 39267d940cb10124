// hostmesh's version: what `hostd --version`, `meshctl version` and
// GetHostInfo (HostInfo.version) report. One constant for every binary.
#ifndef HOSTMESH_LIB_VERSION_H_
#define HOSTMESH_LIB_VERSION_H_

namespace mesh {

inline constexpr char kHostmeshVersion[] = "0.1.0";

}  // namespace mesh

#endif  // HOSTMESH_LIB_VERSION_H_
