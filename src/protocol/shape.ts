/**
 * A message type as the strict wire check needs it (strict.ts): its fields'
 * numbers, names and kinds. The same property names as @bufbuild/protobuf's
 * DescMessage and DescField, so a reflected descriptor (in tests) is a shape
 * too; the host's come from generated data (gen/shapes.ts), without the
 * reflection runtime.
 */

/** Protobuf's scalar types, by their number in descriptor.proto (as @bufbuild/protobuf's ScalarType). */
export const Scalar = {
  DOUBLE: 1,
  FLOAT: 2,
  INT64: 3,
  UINT64: 4,
  INT32: 5,
  FIXED64: 6,
  FIXED32: 7,
  BOOL: 8,
  STRING: 9,
  BYTES: 12,
  UINT32: 13,
  SFIXED32: 15,
  SFIXED64: 16,
  SINT32: 17,
  SINT64: 18,
} as const;

export interface FieldShape {
  number: number;
  /** The name in the .proto (for messages). */
  name: string;
  /** The name in generated TypeScript (a oneof member's $case). */
  localName: string;
  fieldKind: 'scalar' | 'enum' | 'message' | 'list' | 'map';
  /** What a repeated field repeats. */
  listKind?: 'scalar' | 'enum' | 'message';
  scalar?: number;
  message?: MessageShape;
}

export interface MessageShape {
  name: string;
  fields: readonly FieldShape[];
}

/** The generated form: nested messages by full type name, linked by {@link linkShapes}. */
export type ShapeTable = readonly {
  typeName: string;
  name: string;
  fields: readonly (Omit<FieldShape, 'message'> & { message?: string })[];
}[];

/** The shapes of a table, by full type name, their nested messages linked. */
export function linkShapes(table: ShapeTable): ReadonlyMap<string, MessageShape> {
  const byName = new Map<string, { name: string; fields: FieldShape[] }>();
  for (const m of table) byName.set(m.typeName, { name: m.name, fields: [] });
  for (const m of table) {
    const shape = byName.get(m.typeName)!;
    for (const { message, ...field } of m.fields) {
      shape.fields.push(message === undefined ? field : { ...field, message: byName.get(message)! });
    }
  }
  return byName;
}
