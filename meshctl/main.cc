// meshctl: the operator CLI of hostmesh. All logic is in meshctl_lib.
#include <iostream>

#include "meshctl/meshctl.h"

int main(int argc, char** argv) {
  return mesh::RunMeshctl(argc, argv, std::cout, std::cerr);
}
