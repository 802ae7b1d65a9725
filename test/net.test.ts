/**
 * Tap networking, as crosvm gave it to plugins: the host creates a tap
 * (--host-ip, --netmask, --mac), attaches to a persistent one (--tap-name)
 * or takes an inherited descriptor (--tap-fd), and get_net_config hands it to
 * the plugin. A real frame crosses each time: the test plugin
 * (test/plugins/net-arp.ts) writes an ARP request for the host's address
 * into the tap and reads the kernel's reply out of it, jailed and not.
 *
 * Every tap is made in a network namespace the test creates (unshare --net),
 * never among the machine's own interfaces. The C library's side
 * (crosvm_net_get_config) is in c-api.test.ts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/package-root.js';
import { planNetwork } from '../src/host/net.js';
import type { NetArpErrorReport, NetArpReport, Reported } from './support/reports.js';
import { IN_NEW_NETNS, SANDBOX_MODES, describeRun, modeName, reportOf, runCli, runPluginCli, testPlugin } from './support/run.js';
import { HOST_IP, HOST_MAC, NETMASK, TAP_FLAGS, inNetnsAfter, needsTaps } from './support/net.js';

const PLUGIN = testPlugin('net-arp');
const LAUNCHER = path.join(PACKAGE_ROOT, 'dist/test/support/tap-fd-launcher.js');
const GUEST_MAC = '02:00:5e:10:20:30';

/** A persistent tap `name` with address/prefix `cidr`, up, in the new namespace. */
function persistentTap(name: string, cidr: string): string {
  return `ip tuntap add mode tap name ${name} && ip addr add ${cidr} dev ${name} && ip link set ${name} up`;
}

/** The plugin saw a tap with this configuration, and the kernel answered its ARP request from `mac`. */
function assertArpCrossed(got: Reported<NetArpReport>, ip: string, netmask: string, mac: string, guestIp: string): void {
  assert.equal(got.error, undefined);
  assert.deepEqual({ ip: got.hostIpv4, netmask: got.netmask, mac: got.hostMac }, { ip, netmask, mac });
  assert.deepEqual(got.tapFeatures, { tap: true, noPi: true }, 'TUNGETFEATURES');
  assert.deepEqual(got.tapFlags, { tap: true, noPi: true }, 'TUNGETIFF');
  assert.equal(got.guestIpv4, guestIp);
  assert.deepEqual(got.reply, {
    destinationMac: GUEST_MAC,
    senderMac: mac,
    senderIp: ip,
    targetMac: GUEST_MAC,
    targetIp: guestIp,
  });
}

for (const sandboxed of SANDBOX_MODES) {
  describe(`tap networking (${modeName(sandboxed)})`, needsTaps, () => {
    test('--host-ip, --netmask, --mac: a new tap with that configuration, and the host answers ARP on it', async () => {
      const got = reportOf<NetArpReport>(await runPluginCli(PLUGIN, { sandboxed, flags: [...TAP_FLAGS], wrap: IN_NEW_NETNS }));
      assertArpCrossed(got, HOST_IP, NETMASK, HOST_MAC, '100.115.92.6');
      assert.match(got.tapName, /^pvtap\d+$/);
      assert.equal(got.nonBlocking, true, 'crosvm opened its taps non-blocking');
    });

    test("crosvm's spelling --host_ip works too", async () => {
      const flags = ['--host_ip', '10.0.3.1', '--netmask', '255.255.255.0', '--mac', '02:aa:bb:cc:dd:ee'];
      const got = reportOf<NetArpReport>(await runPluginCli(PLUGIN, { sandboxed, flags, wrap: IN_NEW_NETNS }));
      assertArpCrossed(got, '10.0.3.1', '255.255.255.0', '02:aa:bb:cc:dd:ee', '10.0.3.2');
    });

    test('--tap-name: an existing persistent tap with its own address; --mac gives it that MAC', async () => {
      const wrap = inNetnsAfter(persistentTap('pvtest0', '10.11.12.1/28'));
      const got = reportOf<NetArpReport>(
        await runPluginCli(PLUGIN, { sandboxed, flags: ['--tap-name', 'pvtest0', '--mac', '02:11:22:33:44:55'], wrap }),
      );
      assertArpCrossed(got, '10.11.12.1', '255.255.255.240', '02:11:22:33:44:55', '10.11.12.2');
      assert.equal(got.tapName, 'pvtest0');
    });

    test('--tap-fd: a tap descriptor plugvisor inherited from its launcher', async () => {
      const wrap = [...inNetnsAfter(persistentTap('pvfd0', '10.20.30.1/24')), process.execPath, LAUNCHER, 'pvfd0'];
      const got = reportOf<NetArpReport>(await runPluginCli(PLUGIN, { sandboxed, flags: ['--tap-fd', '3'], wrap }));
      assert.equal(got.tapName, 'pvfd0');
      assert.equal(got.reply?.senderIp, '10.20.30.1', JSON.stringify(got));
      assert.equal(got.reply?.senderMac, got.hostMac, 'the reply comes from the MAC get_net_config reported');
    });
  });
}

describe('tap networking: what the plugin is told', needsTaps, () => {
  test('without a tap, get_net_config is ENODATA', async () => {
    const r = await runPluginCli(PLUGIN, { wrap: IN_NEW_NETNS });
    assert.deepEqual(reportOf<NetArpErrorReport>(r), { error: 'ENODATA' });
  });

  test('a tap without an IPv4 address: the plugin gets EADDRNOTAVAIL, and plugvisor says why', async () => {
    const r = await runPluginCli(PLUGIN, {
      flags: ['--tap-name', 'pvbare'],
      wrap: inNetnsAfter('ip tuntap add mode tap name pvbare'),
    });
    assert.deepEqual(reportOf<NetArpErrorReport>(r), { error: 'EADDRNOTAVAIL' });
    assert.match(r.stderr, /warning: get_net_config: reading the configuration of --tap-name pvbare failed: ioctl SIOCGIFADDR/);
  });

  test('with two taps, the plugin gets the first, and plugvisor warns that the other stays unused', async () => {
    const wrap = inNetnsAfter(`${persistentTap('pvone', '10.1.0.1/24')} && ${persistentTap('pvtwo', '10.2.0.1/24')}`);
    const r = await runPluginCli(PLUGIN, { flags: ['--tap-name', 'pvone', '--tap-name', 'pvtwo'], wrap });
    assert.equal(reportOf<NetArpReport>(r).tapName, 'pvone');
    assert.match(
      r.stderr,
      /warning: only the first tap device \(--tap-name pvone\) reaches the plugin.*--tap-name pvtwo stay unused/,
    );
  });
});

/** `plugvisor run` of the net plugin that must fail before it starts, with `message` as its one line. */
async function assertSetupError(flags: string[], message: RegExp, wrap?: string[]): Promise<void> {
  const r = await runCli(['run', '--disable-sandbox', '--plugin', PLUGIN, ...flags], wrap ? { wrap } : {});
  assert.equal(r.code, 1, describeRun(r));
  assert.equal(r.stdout, '', 'the plugin never ran');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, describeRun(r));
  assert.match(lines[0], message);
}

describe('tap networking: clear errors', needsTaps, () => {
  test('no /dev/net/tun', () =>
    assertSetupError(
      [...TAP_FLAGS],
      /^plugvisor: error: cannot create a tap device: \/dev\/net\/tun does not exist .*modprobe tun/,
      // A private mount namespace hides the device, and only there.
      ['unshare', '--mount', '--net', '--', '/bin/sh', '-c', 'mount -t tmpfs none /dev/net && exec "$@"', 'sh'],
    ));

  test('no CAP_NET_ADMIN', () =>
    assertSetupError(
      [...TAP_FLAGS],
      /^plugvisor: error: cannot create a tap device: creating one needs CAP_NET_ADMIN: .*--tap-name/,
      ['unshare', '--net', '--', 'setpriv', '--bounding-set', '-net_admin', '--inh-caps', '-net_admin', '--'],
    ));

  test('a tap name that does not exist', () =>
    assertSetupError(
      ['--tap-name', 'nosuchtap'],
      /^plugvisor: error: --tap-name nosuchtap: there is no network interface named nosuchtap here/,
      [...IN_NEW_NETNS],
    ));

  test('a tap name that is not a tap', () =>
    assertSetupError(['--tap-name', 'lo'], /^plugvisor: error: --tap-name lo: lo is not a tap device$/, [...IN_NEW_NETNS]));

  test('a TUN device is not a tap', () =>
    assertSetupError(
      ['--tap-name', 'pvtun0'],
      /^plugvisor: error: --tap-name pvtun0: pvtun0 is not a tap device$/,
      inNetnsAfter('ip tuntap add mode tun name pvtun0'),
    ));

  test('an fd that is not a tap, and one that is not open', async () => {
    await assertSetupError(
      ['--tap-fd', '0'],
      /^plugvisor: error: --tap-fd 0: descriptor 0 is not a tap device \(ioctl TUNGETIFF: /,
    );
    await assertSetupError(['--tap-fd', '1000'], /^plugvisor: error: --tap-fd 1000: descriptor 1000 is not open in plugvisor$/);
  });
});

describe('planNetwork: the options as the library takes them', () => {
  test("a tap to create, with the wire's numbers", () => {
    const plan = planNetwork({ hostIp: HOST_IP, netmask: NETMASK, mac: HOST_MAC });
    assert.deepEqual(plan.create, { ip: 0x64735c05, netmask: 0xfffffffc });
    assert.deepEqual([...plan.mac!], [0xde, 0x21, 0xe8, 0x47, 0x6b, 0x6a]);
    assert.deepEqual(planNetwork({}), { create: undefined, mac: undefined, tapNames: [], tapFds: [] });
    assert.equal(planNetwork({ hostIp: '10.0.0.1', netmask: '0.0.0.0' }).create?.netmask, 0);
  });

  test('names and descriptors are checked too', () => {
    assert.throws(
      () => planNetwork({ tapNames: ['a-name-longer-than-15'] }),
      /--tap-name 'a-name-longer-than-15' is not an interface name \(1 to 15 bytes/,
    );
    assert.throws(() => planNetwork({ tapNames: ['a/b'] }), /is not an interface name/);
    assert.throws(() => planNetwork({ tapNames: [''] }), /is not an interface name/);
    assert.throws(() => planNetwork({ tapFds: [-1] }), /--tap-fd '-1' is not a file descriptor number/);
    assert.throws(() => planNetwork({ tapFds: [1.5] }), /is not a file descriptor number/);
    assert.throws(() => planNetwork({ hostIp: '010.0.0.1', netmask: NETMASK }), /not an IPv4 address/);
    assert.throws(() => planNetwork({ hostIp: '0.0.0.0', netmask: NETMASK }), /cannot be an interface's address/);
    assert.throws(() => planNetwork({ tapNames: ['vm0'], mac: '00:00:00:00:00:00' }), /the all-zero address/);
  });
});

describe('tap networking: bad options are refused before anything is made', () => {
  for (const [flags, message] of [
    [['--host-ip', '100.115.92', '--netmask', NETMASK], /--host-ip '100\.115\.92' is not an IPv4 address/],
    [['--host-ip', '100.115.92.256', '--netmask', NETMASK], /--host-ip '100\.115\.92\.256' is not an IPv4 address/],
    [['--host-ip', '224.0.0.1', '--netmask', NETMASK], /--host-ip '224\.0\.0\.1' is a multicast address/],
    [['--host-ip', HOST_IP, '--netmask', '255.0.255.0'], /--netmask '255\.0\.255\.0' is not a netmask/],
    [['--host-ip', HOST_IP, '--netmask', NETMASK, '--mac', 'de:21:e8:47:6b'], /--mac 'de:21:e8:47:6b' is not a MAC address/],
    [
      ['--host-ip', HOST_IP, '--netmask', NETMASK, '--mac', '01:00:5e:00:00:01'],
      /--mac '01:00:5e:00:00:01' is a multicast address/,
    ],
    [['--host-ip', HOST_IP], /--host-ip needs --netmask/],
    [['--netmask', NETMASK], /--netmask needs --host-ip/],
    [['--mac', HOST_MAC], /--mac needs a tap device/],
    [['--tap-fd', 'three'], /--tap-fd must be a whole number/],
  ] as const) {
    test(flags.join(' '), async () => {
      const r = await runCli(['run', '--disable-sandbox', '--plugin', PLUGIN, ...flags]);
      assert.equal(r.code, 1, describeRun(r));
      assert.match(r.stderr, message, describeRun(r));
      assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    });
  }
});
