"""Static vocabulary of the simulated site: cities, categories, seasonality profiles, name parts.

Pure data, no randomness. ``WorldConfig.cities``/``.categories`` take the first *n* rows of
:data:`CITIES`/:data:`CATEGORIES`, so the tables are ordered by importance.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class City:
    name: str
    state: str
    lat: float
    lon: float
    share: float  # share of the businesses
    traffic: float  # page-view demand per business, relative (tourist towns > 1)
    utc_offset_h: int  # standard time; DST is ignored


@dataclass(frozen=True)
class Category:
    name: str
    share: float  # share of the businesses (as primary category)
    traffic: float  # search demand per business, relative
    leisure: bool  # leisure: evening/weekend peaks; otherwise office hours/weekdays
    conv: tuple[float, float, float]  # multipliers of BIZSITE_VISIT, CALL, DIRECTIONS per view
    review: float  # multiplier of REVIEW/TIP per view
    checkin: float  # multiplier of CHECKIN per view
    priced: bool  # has a price range ($..$$$$)
    subcategories: tuple[str, ...]
    suffixes: tuple[str, ...]  # name suffixes


CITIES: tuple[City, ...] = (
    City("Las Vegas", "NV", 36.1699, -115.1398, 0.17, 1.35, -8),
    City("Phoenix", "AZ", 33.4484, -112.0740, 0.14, 1.00, -7),
    City("Toronto", "ON", 43.6532, -79.3832, 0.13, 1.05, -5),
    City("Charlotte", "NC", 35.2271, -80.8431, 0.07, 0.90, -5),
    City("Scottsdale", "AZ", 33.4942, -111.9261, 0.06, 1.15, -7),
    City("Pittsburgh", "PA", 40.4406, -79.9959, 0.06, 0.95, -5),
    City("Montréal", "QC", 45.5017, -73.5673, 0.06, 0.90, -5),
    City("Calgary", "AB", 51.0447, -114.0719, 0.05, 0.85, -7),
    City("Mesa", "AZ", 33.4152, -111.8315, 0.05, 0.75, -7),
    City("Henderson", "NV", 36.0395, -114.9817, 0.04, 0.80, -8),
    City("Tempe", "AZ", 33.4255, -111.9400, 0.04, 0.95, -7),
    City("Cleveland", "OH", 41.4993, -81.6944, 0.04, 0.85, -5),
    City("Madison", "WI", 43.0731, -89.4012, 0.03, 0.90, -6),
    City("Chandler", "AZ", 33.3062, -111.8413, 0.03, 0.80, -7),
    City("Champaign", "IL", 40.1164, -88.2434, 0.02, 0.85, -6),
    City("Nashville", "TN", 36.1627, -86.7816, 0.03, 1.20, -6),
    City("New Orleans", "LA", 29.9511, -90.0715, 0.03, 1.30, -6),
    City("Tucson", "AZ", 32.2226, -110.9747, 0.03, 0.85, -7),
    City("Philadelphia", "PA", 39.9526, -75.1652, 0.04, 1.00, -5),
    City("Tampa", "FL", 27.9506, -82.4572, 0.03, 0.95, -5),
    City("Indianapolis", "IN", 39.7684, -86.1581, 0.03, 0.85, -5),
    City("Reno", "NV", 39.5296, -119.8138, 0.02, 0.90, -8),
    City("Saint Louis", "MO", 38.6270, -90.1994, 0.03, 0.85, -6),
    City("Boise", "ID", 43.6150, -116.2023, 0.02, 0.80, -7),
    City("Santa Barbara", "CA", 34.4208, -119.6982, 0.02, 1.10, -8),
    City("Edmonton", "AB", 53.5461, -113.4938, 0.03, 0.80, -7),
)

CATEGORIES: tuple[Category, ...] = (
    Category("Restaurants", 0.30, 1.30, True, (0.7, 0.9, 1.5), 1.6, 1.6, True,
             ("Mexican", "Pizza", "Italian", "Chinese", "Sandwiches", "Burgers", "American (New)",
              "Japanese", "Thai", "Breakfast & Brunch", "Vietnamese", "Indian"),
             ("Kitchen", "Grill", "Bistro", "Cantina", "Diner", "Eatery", "Taqueria", "Pizzeria")),
    Category("Food", 0.10, 1.00, True, (0.8, 0.6, 1.4), 1.2, 1.8, True,
             ("Coffee & Tea", "Bakeries", "Desserts", "Juice Bars & Smoothies", "Ice Cream & Frozen Yogurt", "Donuts"),
             ("Coffee", "Bakery", "Creamery", "Roasters", "Sweets", "Juice Co.")),
    Category("Shopping", 0.10, 0.80, True, (1.6, 0.5, 1.0), 0.6, 0.5, True,
             ("Fashion", "Home & Garden", "Books, Mags, Music & Video", "Electronics", "Sporting Goods", "Jewelry"),
             ("Boutique", "Outfitters", "Market", "Goods", "Supply", "Emporium")),
    Category("Beauty & Spas", 0.08, 0.90, False, (1.0, 2.0, 0.8), 1.1, 0.6, True,
             ("Nail Salons", "Hair Salons", "Day Spas", "Massage", "Barbers", "Skin Care"),
             ("Salon", "Spa", "Nails", "Studio", "Barbershop", "Beauty Bar")),
    Category("Home Services", 0.07, 0.60, False, (1.4, 2.6, 0.2), 0.7, 0.1, False,
             ("Plumbing", "Contractors", "Heating & Air Conditioning/HVAC", "Movers", "Electricians", "Handyman"),
             ("Plumbing", "Construction", "Heating & Air", "Moving", "Electric", "Home Repair")),
    Category("Health & Medical", 0.07, 0.70, False, (1.1, 2.2, 0.8), 0.6, 0.2, False,
             ("Dentists", "General Dentistry", "Doctors", "Chiropractors", "Optometrists", "Physical Therapy"),
             ("Dental", "Family Practice", "Chiropractic", "Eye Care", "Wellness Center", "Clinic")),
    Category("Automotive", 0.06, 0.70, False, (0.9, 1.9, 1.2), 0.8, 0.3, False,
             ("Auto Repair", "Tires", "Car Dealers", "Oil Change Stations", "Body Shops", "Car Wash"),
             ("Auto Repair", "Tire & Service", "Motors", "Lube", "Collision", "Car Wash")),
    Category("Nightlife", 0.05, 1.20, True, (0.6, 0.5, 1.6), 1.2, 2.4, True,
             ("Bars", "Lounges", "Dance Clubs", "Pubs", "Cocktail Bars", "Sports Bars"),
             ("Tavern", "Lounge", "Pub", "Bar", "Social Club", "Taproom")),
    Category("Active Life", 0.04, 0.80, True, (1.3, 0.8, 1.1), 0.8, 1.4, False,
             ("Gyms", "Parks", "Yoga", "Golf", "Trainers", "Climbing"),
             ("Fitness", "Yoga", "Golf Club", "Athletics", "Climbing Gym", "Training")),
    Category("Local Services", 0.04, 0.50, False, (1.0, 1.6, 1.0), 0.5, 0.3, False,
             ("Dry Cleaning & Laundry", "Self Storage", "Shipping Centers", "Printing Services", "Shoe Repair"),
             ("Cleaners", "Storage", "Ship & Print", "Print Shop", "Repair")),
    Category("Hotels & Travel", 0.03, 1.40, True, (2.2, 1.0, 0.9), 1.0, 1.0, True,
             ("Hotels", "Car Rental", "Tours", "Airport Shuttles", "Bed & Breakfast"),
             ("Hotel", "Inn", "Suites", "Tours", "Rentals")),
    Category("Arts & Entertainment", 0.03, 1.00, True, (1.5, 0.6, 1.2), 0.9, 1.6, False,
             ("Cinema", "Museums", "Music Venues", "Art Galleries", "Bowling"),
             ("Theatre", "Gallery", "Hall", "Museum", "Lanes")),
    Category("Pets", 0.02, 0.60, False, (1.0, 1.8, 0.9), 0.8, 0.3, False,
             ("Veterinarians", "Pet Groomers", "Pet Stores", "Dog Walkers"),
             ("Animal Hospital", "Pet Spa", "Pet Supply", "Vet Clinic")),
    Category("Professional Services", 0.01, 0.40, False, (1.6, 2.0, 0.3), 0.4, 0.1, False,
             ("Lawyers", "Accountants", "Web Design", "Marketing"),
             ("Law Group", "CPA", "Partners", "Associates")),
)

# Local-hour demand profiles (00..23), relative; normalised by the world.
HOURLY_LEISURE = (0.35, 0.2, 0.12, 0.08, 0.08, 0.12, 0.3, 0.6, 0.85, 0.95, 1.15, 1.8,
                  2.3, 1.7, 1.25, 1.2, 1.45, 2.1, 2.6, 2.4, 1.9, 1.4, 0.95, 0.6)
HOURLY_SERVICES = (0.1, 0.06, 0.05, 0.05, 0.06, 0.15, 0.45, 1.2, 2.0, 2.35, 2.3, 2.0,
                   1.8, 2.0, 2.1, 1.9, 1.6, 1.2, 0.9, 0.75, 0.6, 0.45, 0.3, 0.18)
# Day-of-week demand (Monday..Sunday), relative; normalised by the world.
WEEKLY_LEISURE = (0.85, 0.85, 0.9, 0.95, 1.15, 1.3, 1.1)
WEEKLY_SERVICES = (1.12, 1.1, 1.1, 1.05, 1.0, 0.78, 0.6)

NAME_ADJECTIVES = (
    "Golden", "Desert", "Blue", "Red Rock", "Silver", "Urban", "Little", "Old Town", "Sunny", "Lucky",
    "Copper", "Maple", "Harbor", "Northern", "Green", "Royal", "Humble", "Happy", "Wild", "Iron",
    "Velvet", "Cactus", "Prairie", "Bright", "Corner", "Main Street", "Sunset", "Twin", "Crystal", "Cedar",
)
NAME_NOUNS = (
    "Dragon", "Oak", "Coyote", "Lantern", "Anchor", "Sparrow", "Bear", "Fox", "Compass", "Mesa",
    "Pine", "Harvest", "Mountain", "River", "Canyon", "Falcon", "Garden", "Bridge", "Lotus", "Star",
)
NAME_SURNAMES = (
    "Garcia", "Nguyen", "Smith", "Rossi", "Kim", "Patel", "Murphy", "Chen", "Lopez", "Johnson",
    "Tremblay", "Müller", "Okafor", "Haddad", "Kowalski", "Silva", "Yamamoto", "O'Brien", "Dubois", "Singh",
)
