/**
 * Where plugvisor's native parts are. binding.gyp builds them all into one
 * directory — the N-API addon, the sandbox helpers (plugvisor-jail-exec,
 * plugvisor-seccomp-compile) and the C client library's prefix (include/,
 * lib/) — and the package ships the same set prebuilt. node-gyp-build (the
 * ecosystem's loader for prebuildify's layout) picks the directory: build/Release
 * when the parts were built from source, else prebuilds/<platform>-<arch>.
 *
 * Nothing here loads the addon, so the CLI can answer --version, --help and
 * `c-flags` however broken the addon is.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
// A static import, so that the CLI's bundle carries node-gyp-build inside it:
// resolving and loading it from node_modules at run time was ~3 ms of the
// CLI's start-up (bench/README.md, "Profile: where start-up goes").
import nodeGypBuild from 'node-gyp-build';
import { PACKAGE_ROOT } from '../package-root.js';

/** What a build from source needs on Debian/Ubuntu (scripts/install.js says the same). */
export const BUILD_DEPENDENCIES = 'build-essential python3 protobuf-c-compiler libprotobuf-c-dev libseccomp-dev';

/** How to get working native parts, for the end of an error message. */
export const NATIVE_FIX = `run \`npm rebuild plugvisor\` (a build from source needs the Debian packages ${BUILD_DEPENDENCIES})`;

/** A native part of plugvisor is missing or cannot be used; the message is one line that says how to fix it. */
export class NativePartsError extends Error {
  override name = 'NativePartsError';
}

let addonPathCache: string | undefined;

/** The addon file node-gyp-build chose. */
export function addonPath(): string {
  if (addonPathCache === undefined) {
    try {
      addonPathCache = nodeGypBuild.path(PACKAGE_ROOT);
    } catch {
      throw new NativePartsError(
        `plugvisor's native addon is not built for ${process.platform}-${process.arch} ` +
          `(none in prebuilds/${process.platform}-${process.arch}/ or build/Release/ of ${PACKAGE_ROOT}): ${NATIVE_FIX}`,
      );
    }
  }
  return addonPathCache;
}

/** The directory that holds every native part (build/Release or prebuilds/<platform>-<arch>). */
export function nativeDir(): string {
  return dirname(addonPath());
}

/** A file of the native set, e.g. `lib/libcrosvm_plugin.so`; throws a NativePartsError when it is not there. */
export function nativePart(relative: string, what: string): string {
  const file = join(nativeDir(), relative);
  if (!existsSync(file)) throw new NativePartsError(`${what} is missing: there is no ${file}; ${NATIVE_FIX}`);
  return file;
}

/** The C client library's install prefix (include/crosvm.h, lib/libcrosvm_plugin.so, lib/pkgconfig/crosvm_plugin.pc). */
export function cLibraryPrefix(): string {
  nativePart('include/crosvm.h', "the C client library's header");
  nativePart('lib/libcrosvm_plugin.so', 'the C client library');
  nativePart('lib/pkgconfig/crosvm_plugin.pc', "the C client library's pkg-config file");
  return nativeDir();
}
