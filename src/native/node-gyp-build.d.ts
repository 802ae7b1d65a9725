// node-gyp-build ships no types; this is the one function plugvisor uses.
declare module 'node-gyp-build' {
  interface NodeGypBuild {
    /** The addon file for this platform and runtime; throws when there is none. */
    path(dir: string): string;
  }
  const nodeGypBuild: NodeGypBuild;
  export default nodeGypBuild;
}
