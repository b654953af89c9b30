/*
 * nats-launch: the entrypoint of the FROM-scratch unibus/nats-server image,
 * which has no shell. Two jobs:
 *
 *   nats-launch run <nats-server args…>
 *     Reads the JetStream at-rest key from $UNIBUS_JS_KEY_FILE (a 0600 file in
 *     the state volume written by the init container), puts it in the
 *     environment as UNIBUS_JS_KEY and execs /nats-server. The key thus reaches
 *     nats-server only through its own environment (architecture §1.4): never in the
 *     image, the compose file, the config file, argv or `docker inspect`.
 *
 *   nats-launch probe <port> [path]
 *     HTTP GET http://127.0.0.1:<port><path> (default /healthz); exit 0 on a
 *     200 reply. The container healthcheck (no curl in a scratch image).
 *
 * Built static (gcc -static) by deploy/scripts/build-images.sh.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static int probe(const char *port, const char *path) {
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 1;
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    fprintf(stderr, "probe: cannot connect to 127.0.0.1:%s\n", port);
    return 1;
  }
  char req[512];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
  if (write(fd, req, (size_t)n) != n) return 1;
  char buf[256] = {0};
  ssize_t got = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (got < 12) return 1;
  if (strncmp(buf + 9, "200", 3) != 0) {
    fprintf(stderr, "probe: %.*s\n", (int)strcspn(buf, "\r\n"), buf);
    return 1;
  }
  return 0;
}

static int run(int argc, char **argv) {
  const char *file = getenv("UNIBUS_JS_KEY_FILE");
  if (file == NULL || *file == '\0') {
    fprintf(stderr, "nats-launch: UNIBUS_JS_KEY_FILE is not set\n");
    return 1;
  }
  int fd = open(file, O_RDONLY);
  if (fd < 0) {
    perror("nats-launch: open UNIBUS_JS_KEY_FILE");
    return 1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || (st.st_mode & 077) != 0) {
    fprintf(stderr, "nats-launch: %s must be mode 0600\n", file);
    return 1;
  }
  char key[257] = {0};
  ssize_t got = read(fd, key, sizeof key - 1);
  close(fd);
  if (got <= 0) {
    fprintf(stderr, "nats-launch: %s is empty\n", file);
    return 1;
  }
  key[strcspn(key, "\r\n")] = '\0';
  /* Same rule as libs/cli isValidJetStreamKey: a letter, then 31+ alphanumerics. */
  size_t len = strlen(key);
  int ok = len >= 32 && isalpha((unsigned char)key[0]);
  for (size_t i = 0; ok && i < len; i++) ok = isalnum((unsigned char)key[i]);
  if (!ok) {
    fprintf(stderr, "nats-launch: %s is damaged (expected a letter then 31+ letters/digits)\n", file);
    return 1;
  }
  if (setenv("UNIBUS_JS_KEY", key, 1) != 0) return 1;
  memset(key, 0, sizeof key);
  unsetenv("UNIBUS_JS_KEY_FILE");
  argv[0] = "/nats-server";
  execv("/nats-server", argv);
  perror("nats-launch: exec /nats-server");
  (void)argc;
  return 1;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "probe") == 0) return probe(argv[2], argc >= 4 ? argv[3] : "/healthz");
  if (argc >= 2 && strcmp(argv[1], "run") == 0) return run(argc - 1, argv + 1);
  fprintf(stderr, "usage: nats-launch run <nats-server args…> | nats-launch probe <port> [path]\n");
  return 2;
}
