/* F1, the spawn floor (and failure_bench's kill -> reap floor): the least a
 * started process can do. It says it runs by writing one byte to fd 3, then
 * lives until its stdin closes. Linked statically (no dynamic loader work),
 * so what is measured is the kernel's fork/exec and scheduling. */
#include <unistd.h>

int main(void) {
  char byte = 1;
  if (write(3, &byte, 1) != 1) return 1;
  char buffer[64];
  while (read(0, buffer, sizeof(buffer)) > 0) {
  }
  return 0;
}
