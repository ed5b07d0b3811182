// The structured logger the mesh writes to: pino's Logger satisfies it; tests can pass a fake.
export interface MeshLogger {
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
  debug(obj: object, msg?: string): void
  child(bindings: Record<string, unknown>): MeshLogger
}

export const silentLogger: MeshLogger = {
  info() {},
  warn() {},
  error() {},
  debug() {},
  child: () => silentLogger,
}
