// Front door of the host layer: disk formats and (later) the Hypervisor interface.
export * from './disk/index.js'
