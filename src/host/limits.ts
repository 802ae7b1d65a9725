/** The most VCPUs a VM may have (crosvm's plugin mode allowed 64, one bit of `pause_vcpus`' cpu_mask each). */
export const MAX_CPUS = 64;
