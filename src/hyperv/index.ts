// Front door of the host layer: disk formats and the Hypervisor interface.
export * from './disk/index.js'
export * from './hypervisor.js'
