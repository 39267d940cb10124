/* F3r's child: the far end of floor_server's relay (the role procd plays
 * behind hostd). It reads frames from fd 3 (a socketpair) and writes each
 * complete frame back unchanged, in order: a frame is a little-endian
 * uint32 length, then that many bytes (an 8-byte call id and the payload).
 * Exits when fd 3 reaches EOF or fails. Links nothing but libc. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t wrote = write(fd, data, size);
    if (wrote <= 0) return -1;
    data += wrote;
    size -= (size_t)wrote;
  }
  return 0;
}

int main(void) {
  size_t capacity = 1 << 20;
  char* buffer = malloc(capacity);
  size_t filled = 0;
  if (buffer == NULL) return 1;
  for (;;) {
    if (filled == capacity) {
      capacity *= 2;
      char* grown = realloc(buffer, capacity);
      if (grown == NULL) return 1;
      buffer = grown;
    }
    ssize_t got = read(3, buffer + filled, capacity - filled);
    if (got <= 0) return 0;
    filled += (size_t)got;
    /* Every complete frame goes back in one write. */
    size_t complete = 0;
    while (filled - complete >= 4) {
      uint32_t length;
      memcpy(&length, buffer + complete, 4);
      if (filled - complete - 4 < length) break;
      complete += 4 + (size_t)length;
    }
    if (complete == 0) continue;
    if (WriteAll(3, buffer, complete) != 0) return 1;
    memmove(buffer, buffer + complete, filled - complete);
    filled -= complete;
  }
}
