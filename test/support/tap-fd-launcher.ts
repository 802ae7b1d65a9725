/**
 * Stands in for a privileged launcher that hands plugvisor a tap, as
 * crosvm's users did with --tap-fd: attaches to the persistent tap NAME,
 * runs COMMAND with the tap's descriptor as its fd 3, and exits as it did.
 *
 * usage: node tap-fd-launcher.js NAME COMMAND [ARGS...]
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { createLog } from '../../src/host/log.js';
import { openTaps } from '../../src/host/net.js';

const [name, command, ...args] = process.argv.slice(2);
if (name === undefined || command === undefined) throw new Error('usage: tap-fd-launcher NAME COMMAND [ARGS...]');
const [tap] = openTaps(
  { tapNames: [name] },
  createLog(() => {}),
);
const child = spawn(command, args, { stdio: ['inherit', 'inherit', 'inherit', tap.fd] });
tap.close();
child.once('exit', (code, signal) => process.exit(code ?? 128 + (signal === null ? 0 : constants.signals[signal])));
