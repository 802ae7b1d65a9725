/**
 * Who the plugin is inside the jail: its uid and gid in its user namespace,
 * the host ids they map to, and the id maps the kernel is given.
 */
import type { GidMap } from './options.js';

/** The plugin's uid/gid inside the jail when the host runs as root (never root inside). */
export const UNPRIVILEGED_ID = 65534;

export interface JailIdentity {
  /** uid/gid of the plugin inside its user namespace (never 0). */
  uid: number;
  gid: number;
  /** the host ids they map to */
  hostUid: number;
  hostGid: number;
}

/** The plugin keeps the host's uid/gid (as crosvm did), except that root becomes 65534 inside. */
export function jailIdentity(hostUid: number = process.getuid!(), hostGid: number = process.getgid!()): JailIdentity {
  return {
    uid: hostUid === 0 ? UNPRIVILEGED_ID : hostUid,
    gid: hostGid === 0 ? UNPRIVILEGED_ID : hostGid,
    hostUid,
    hostGid,
  };
}

/**
 * The full gid_map for the jail: the plugin's own gid plus the user's maps.
 * Throws if ranges overlap (the kernel would refuse the map with EINVAL).
 */
export function jailGidMap(identity: JailIdentity, extra: GidMap[]): GidMap[] {
  const all: GidMap[] = [{ inner: identity.gid, outer: identity.hostGid, count: 1 }, ...extra];
  const show = (m: GidMap, i: number) =>
    i === 0 ? `the plugin's own gid (${m.inner}:${m.outer}:1)` : `${m.inner}:${m.outer}:${m.count}`;
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i];
      const b = all[j];
      const overlaps = (x: number, y: number) => x < y + b.count && y < x + a.count;
      if (overlaps(a.inner, b.inner) || overlaps(a.outer, b.outer)) {
        throw new Error(`--plugin-gid-map ${show(b, j)} overlaps ${show(a, i)}: inner and outer ranges must be disjoint`);
      }
    }
  }
  if (all.length > 340) throw new Error('too many --plugin-gid-map entries (the kernel allows 340 lines)');
  return all;
}

/** The text of a /proc/PID/uid_map or gid_map: one `INNER OUTER COUNT` line a range. */
export function formatIdMap(maps: GidMap[]): string {
  return maps.map((m) => `${m.inner} ${m.outer} ${m.count}\n`).join('');
}
