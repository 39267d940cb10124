// The hostmesh client API in one include (with the status macros).
#ifndef HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOSTMESH_H_
#define HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOSTMESH_H_

#include "hostmesh/actor_mesh.h"  // IWYU pragma: export
#include "hostmesh/client.h"      // IWYU pragma: export
#include "hostmesh/extent.h"      // IWYU pragma: export
#include "hostmesh/host_mesh.h"   // IWYU pragma: export
#include "hostmesh/proc_mesh.h"   // IWYU pragma: export
#include "hostmesh/status.h"      // IWYU pragma: export

#endif  // HOSTMESH_CLIENT_INCLUDE_HOSTMESH_HOSTMESH_H_
