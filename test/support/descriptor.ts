/**
 * plugin.proto's messages as @bufbuild/protobuf's reflection sees them (from
 * the generated FileDescriptorSet): enums, oneofs and all, for the fuzz
 * harness that builds messages from them. A DescMessage is also a shape for
 * the strict wire check (src/protocol/shape.ts). Test code only: the host
 * does without the reflection runtime.
 */
import { createFileRegistry, fromBinary, type DescMessage, type FileRegistry } from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { PLUGIN_DESCRIPTOR_SET } from '../../src/protocol/gen/descriptor.js';

let registry: FileRegistry | undefined;

/** The descriptor of plugin.proto's message `name` (e.g. 'MainRequest'). */
export function messageDescriptor(name: string): DescMessage {
  registry ??= createFileRegistry(fromBinary(FileDescriptorSetSchema, Buffer.from(PLUGIN_DESCRIPTOR_SET, 'base64')));
  const desc = registry.getMessage(`plugvisor.plugin.${name}`);
  if (desc === undefined) throw new Error(`plugin.proto has no message ${name}`);
  return desc;
}
