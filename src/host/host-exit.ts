/**
 * Plugins of this process not yet torn down. If the host process exits
 * without tearing their VMs down (an uncaught exception, in plugvisor or in an
 * application that embeds it), their process groups are killed on the way
 * out: a jailed plugin dies with its parent anyway, an unsandboxed one would
 * live on.
 */
import type { PluginStatus } from './process.js';

/** A plugin that can be asked whether it still runs, and killed. */
interface RunningPlugin {
  tryWait(): PluginStatus;
  killPlugin(): void;
}

const runningPlugins = new Set<RunningPlugin>();
let exitHookInstalled = false;

/** Kills `plugin` if it is still running when this process exits (until {@link forgetAtHostExit}). */
export function killOnHostExit(plugin: RunningPlugin): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const running of runningPlugins) if (running.tryWait().state === 'running') running.killPlugin();
    });
  }
  runningPlugins.add(plugin);
}

/** `plugin` is torn down: nothing to do for it at exit. */
export function forgetAtHostExit(plugin: RunningPlugin): void {
  runningPlugins.delete(plugin);
}
