// Layout constants and GUIDs of MS-VHDX (sections cited where they are defined).
import { guidFromString } from './guid.js'

export const KiB = 1024
export const MiB = 1024 * 1024

// §2.2: the fixed 1 MiB header section.
export const FILE_IDENTIFIER_SIGNATURE = 'vhdxfile'
export const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const
export const HEADER_SIZE = 4 * KiB
export const HEADER_SIGNATURE = 'head'
export const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const
export const REGION_TABLE_SIZE = 64 * KiB
export const REGION_TABLE_SIGNATURE = 'regi'
export const REGION_TABLE_MAX_ENTRIES = 2047
export const HEADER_SECTION_SIZE = MiB

// §2.2.3.2 region GUIDs.
export const BAT_REGION_GUID = guidFromString('2DC27766-F623-4200-9D64-115E9BFD4A08')
export const METADATA_REGION_GUID = guidFromString('8B7CA206-4790-4B9A-B8FE-575F050F886E')

// §2.6: metadata region.
export const METADATA_SIGNATURE = 'metadata'
export const METADATA_TABLE_SIZE = 64 * KiB
export const METADATA_MAX_ENTRIES = 2047
export const META_FILE_PARAMETERS = guidFromString('CAA16737-FA36-4D43-B3B6-33F0AA44E76B')
export const META_VIRTUAL_DISK_SIZE = guidFromString('2FA54224-CD1B-4876-B211-5DBED83BF4B8')
export const META_PAGE83 = guidFromString('BECA12AB-B2E6-4523-93EF-C309E000C746')
export const META_LOGICAL_SECTOR_SIZE = guidFromString('8141BF1D-A96F-4709-BA47-F233A8FAAB5F')
export const META_PHYSICAL_SECTOR_SIZE = guidFromString('CDA348C7-445D-4471-9CC9-E9885251C556')
export const META_PARENT_LOCATOR = guidFromString('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C')
export const PARENT_LOCATOR_TYPE_VHDX = guidFromString('B04AEFB7-D19E-4A81-B789-25B8E9445913')
export const META_FLAG_IS_USER = 1
export const META_FLAG_IS_VIRTUAL_DISK = 2
export const META_FLAG_IS_REQUIRED = 4
export const FILE_PARAM_LEAVE_BLOCKS_ALLOCATED = 1
export const FILE_PARAM_HAS_PARENT = 2

// §2.5.1.1 payload block states and §2.5.1.2 sector bitmap block states.
export const PAYLOAD_BLOCK_NOT_PRESENT = 0
export const PAYLOAD_BLOCK_UNDEFINED = 1
export const PAYLOAD_BLOCK_ZERO = 2
export const PAYLOAD_BLOCK_UNMAPPED = 3
/** UNMAPPED in the 0.95 draft; qemu still reads it as such. */
export const PAYLOAD_BLOCK_UNMAPPED_V095 = 5
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
export const SB_BLOCK_NOT_PRESENT = 0
export const SB_BLOCK_PRESENT = 6

export const MIN_BLOCK_SIZE = MiB
export const MAX_BLOCK_SIZE = 256 * MiB
export const DEFAULT_BLOCK_SIZE = 32 * MiB
/** §2.6.2.2: at most 64 TiB. */
export const MAX_VIRTUAL_SIZE = 64 * 1024 * 1024 * MiB
/** A sector bitmap block is 1 MiB and covers 2^23 sectors (§2.4). */
export const SECTOR_BITMAP_BLOCK_SIZE = MiB
export const SECTORS_PER_BITMAP_BLOCK = 2 ** 23

// §2.3: the log.
export const LOG_SECTOR_SIZE = 4 * KiB
export const LOG_ENTRY_SIGNATURE = 'loge'
export const LOG_ZERO_SIGNATURE = 'zero'
export const LOG_DESC_SIGNATURE = 'desc'
export const LOG_DATA_SIGNATURE = 'data'
export const LOG_ENTRY_HEADER_SIZE = 64
export const LOG_DESCRIPTOR_SIZE = 32
export const DEFAULT_LOG_SIZE = MiB

/** §2.6.1.2: a metadata item is at most 1 MiB. */
export const MAX_METADATA_ITEM_SIZE = MiB
/** A log is read whole into memory to replay it; Hyper-V makes 1 MiB logs. */
export const MAX_LOG_LENGTH = 256 * MiB

/** Bounded caches of the reader (STYLE.md §7). */
export const SECTOR_BITMAP_CACHE_BLOCKS = 64
