/*
 * t_net_config: the tap device a crosvm plugin was given, as crosvm's own
 * net-config test plugin expected it. Run (as root, in a network namespace
 * of its own) with
 *
 *   plugvisor run --host-ip 100.115.92.5 --netmask 255.255.255.252 \
 *       --mac de:21:e8:47:6b:6a --plugin t_net_config
 *
 * It checks the configuration crosvm_net_get_config reports (addresses in
 * network byte order), that the descriptor is a tap without a packet
 * information header (TUNGETFEATURES, TUNGETIFF), then acts as the guest's
 * network card: it writes an ARP request for the host's address into the tap
 * and reads the kernel's ARP reply out of it.
 */
#include "testlib.h"

#include <arpa/inet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <time.h>

static const uint8_t host_mac[6] = {0xde, 0x21, 0xe8, 0x47, 0x6b, 0x6a};
static const uint8_t guest_mac[6] = {0x02, 0x00, 0x5e, 0x10, 0x20, 0x31};
#define HOST_IP "100.115.92.5"
#define GUEST_IP "100.115.92.6"
#define NETMASK "255.255.255.252"

#define ARP_FRAME_SIZE 42

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put16(uint8_t *at, uint16_t value) {
  at[0] = (uint8_t)(value >> 8);
  at[1] = (uint8_t)value;
}

/* Who has HOST_IP? Tell GUEST_IP (at guest_mac). */
static void arp_request(uint8_t frame[ARP_FRAME_SIZE], uint32_t sender_ip, uint32_t target_ip) {
  memset(frame, 0, ARP_FRAME_SIZE);
  memset(frame, 0xff, 6);
  memcpy(frame + 6, guest_mac, 6);
  put16(frame + 12, 0x0806); /* ARP */
  put16(frame + 14, 1);      /* Ethernet */
  put16(frame + 16, 0x0800); /* IPv4 */
  frame[18] = 6;
  frame[19] = 4;
  put16(frame + 20, 1); /* request */
  memcpy(frame + 22, guest_mac, 6);
  memcpy(frame + 28, &sender_ip, 4); /* both in network byte order */
  memcpy(frame + 38, &target_ip, 4);
}

/* The kernel's answer to arp_request: from the host's MAC and address, to ours. */
static bool is_arp_reply(const uint8_t *frame, ssize_t length, uint32_t host_ip, uint32_t guest_ip) {
  return length >= ARP_FRAME_SIZE && frame[12] == 0x08 && frame[13] == 0x06 && frame[20] == 0 &&
         frame[21] == 2 && memcmp(frame, guest_mac, 6) == 0 && memcmp(frame + 6, host_mac, 6) == 0 &&
         memcmp(frame + 22, host_mac, 6) == 0 && memcmp(frame + 28, &host_ip, 4) == 0 &&
         memcmp(frame + 32, guest_mac, 6) == 0 && memcmp(frame + 38, &guest_ip, 4) == 0;
}

int main(void) {
  struct crosvm *crosvm;
  OK(crosvm_connect(&crosvm));

  struct crosvm_net_config net;
  OK(crosvm_net_get_config(crosvm, &net));
  CHECK(net.host_ip == inet_addr(HOST_IP));
  CHECK(net.netmask == inet_addr(NETMASK));
  CHECK(memcmp(net.host_mac_address, host_mac, sizeof(host_mac)) == 0);
  CHECK(net.tap_fd >= 0);

  unsigned int features = 0;
  CHECK(ioctl(net.tap_fd, TUNGETFEATURES, &features) == 0);
  CHECK((features & IFF_TAP) != 0 && (features & IFF_NO_PI) != 0);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  CHECK(ioctl(net.tap_fd, TUNGETIFF, &ifr) == 0);
  CHECK((ifr.ifr_flags & IFF_TAP) != 0 && (ifr.ifr_flags & IFF_NO_PI) != 0);

  /* A second call hands out another descriptor of the same tap. */
  struct crosvm_net_config again;
  OK(crosvm_net_get_config(crosvm, &again));
  CHECK(again.tap_fd != net.tap_fd && again.host_ip == net.host_ip);
  close(again.tap_fd);

  uint32_t host_ip = inet_addr(HOST_IP), guest_ip = inet_addr(GUEST_IP);
  uint8_t request[ARP_FRAME_SIZE];
  arp_request(request, guest_ip, host_ip);
  static uint8_t frame[65536];
  bool answered = false;
  long long deadline = now_ms() + 5000, next_send = 0;
  while (!answered && now_ms() < deadline) {
    if (now_ms() >= next_send) {
      CHECK(write(net.tap_fd, request, sizeof(request)) == (ssize_t)sizeof(request));
      next_send = now_ms() + 500;
    }
    struct pollfd p = {.fd = net.tap_fd, .events = POLLIN};
    if (poll(&p, 1, 50) != 1) continue;
    ssize_t n = read(net.tap_fd, frame, sizeof(frame));
    answered = is_arp_reply(frame, n, host_ip, guest_ip); /* other frames: IPv6 chatter */
  }
  if (!answered) FAIL("no ARP reply from %s within 5 s", HOST_IP);

  close(net.tap_fd);
  OK(crosvm_destroy_connection(&crosvm));
  printf("net_config: ok\n");
  return 0;
}
