// VHD (the legacy Virtual PC / Hyper-V format): fixed, dynamic and differencing, read and write.
export { createVhd } from './create-vhd.js'
export { type OpenParent, openVhd, type VhdOpenOptions } from './open-vhd.js'
export { VhdDisk } from './vhd-disk.js'
