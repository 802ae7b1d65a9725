/**
 * Failure responses. The protocol answers a failed request with its errno and
 * the same oneof member as the request, empty; request and response members
 * share their names, so one function per direction builds them all.
 */
import { MainResponse, VcpuResponse, type MainRequest, type VcpuRequest } from './gen/plugin.js';

export type MainRequestCase = NonNullable<MainRequest['message']>['$case'];
export type VcpuRequestCase = NonNullable<VcpuRequest['message']>['$case'];
type VcpuResponseCase = NonNullable<VcpuResponse['message']>['$case'];

/** `errno` with the empty member named `member` (or none, for an unknown request). */
export function mainFailure(errno: number, member: MainRequestCase | undefined): MainResponse {
  if (member === undefined) return { errnoValue: errno, message: undefined };
  // fromPartial fills the member's defaults; the cast only states that the
  // member's name is valid on both sides, which the shared names guarantee.
  return MainResponse.fromPartial({ errnoValue: errno, message: { $case: member, [member]: {} } });
}

/** `errno` with the empty VCPU response member `member`, or none where the response has no such member. */
export function vcpuFailure(errno: number, member: VcpuRequestCase): VcpuResponse {
  if (!VCPU_RESPONSE_CASES.has(member)) return { errnoValue: errno, message: undefined };
  return VcpuResponse.fromPartial({ errnoValue: errno, message: { $case: member, [member]: {} } as VcpuResponse['message'] });
}

/** The VcpuRequest members that have a response member of their name: the ones answered. */
export const VCPU_RESPONSE_CASES: ReadonlySet<string> = new Set<VcpuResponseCase>([
  'wait',
  'getState',
  'setState',
  'getMsrs',
  'setMsrs',
  'setCpuid',
  'getHypervCpuid',
  'enableCapability',
]);
